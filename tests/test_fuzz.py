"""A seeded fuzzer over every route and WebSocket frame type, through a real server.

Each request starts from a valid body (or path segment, or query string) and takes one to three
mutations: a field set to a wrong JSON type (lists and objects where strings go, huge numbers,
deep nesting, invalid UTF-8 inside a string), a field removed, an unknown one added, a value
wrapped in a list or object; or the whole body replaced (empty, not JSON, truncated, not an
object, nested thousands deep, not UTF-8). Every answer must be a 2xx or a JSON error envelope
with a status below 500, every bad WebSocket frame an error frame on a socket that still serves
the next good frame, and the server log must hold no traceback.

The sequence is fixed by a seed, so a failure reproduces; ``RESPLINE_FUZZ_SEED`` picks another
and ``RESPLINE_FUZZ_SCALE`` multiplies the counts (the default runs in a few seconds).
"""

from __future__ import annotations

import copy
import json
import os
import random
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import TEST_KEY, Server
from upstream import Reply, Upstream, text_stream
from upstream_formats import anthropic_text, responses_text

SEED = int(os.environ.get("RESPLINE_FUZZ_SEED", "12"))
SCALE = float(os.environ.get("RESPLINE_FUZZ_SCALE", "1"))
AUTH = {"authorization": f"Bearer {TEST_KEY}"}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}

# --- valid seeds ---------------------------------------------------------------------------------

PARTS = [
    {"type": "input_text", "text": "hi"},
    {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
    {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
]
ITEMS = [
    {"role": "developer", "content": "Be brief."},
    {"type": "message", "role": "user", "content": copy.deepcopy(PARTS)},
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}], "encrypted_content": "opaque"},
    {"type": "function_call", "call_id": "call_1", "name": "get", "arguments": '{"a": 1}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    {"type": "custom_tool_call", "call_id": "call_2", "name": "patch", "input": "*** Begin Patch"},
    {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "ok"}]},
    {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sure.", "annotations": []}]},
    {"role": "user", "content": "go on"},
]
TOOLS = [
    {"type": "function", "name": "get", "description": "d", "strict": False,
     "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}},
    {"type": "custom", "name": "patch", "description": "d",
     "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
    {"type": "namespace", "name": "fs", "description": "files",
     "tools": [{"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}}]},
    {"type": "web_search"},
]
CREATE = {
    "model": "m1",
    "input": ITEMS,
    "instructions": "You help.",
    "tools": TOOLS,
    "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get"}]},
    "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}, "verbosity": "low"},
    "reasoning": {"effort": "low", "summary": "auto"},
    "max_output_tokens": 100,
    "temperature": 0.5,
    "top_p": 0.9,
    "parallel_tool_calls": True,
    "metadata": {"k": "v"},
    "include": ["reasoning.encrypted_content"],
    "stop": ["\n\n"],
    "truncation": "auto",
    "user": "u",
    "prompt_cache_key": "k",
    "store": True,
    "top_logprobs": 0,
    "max_tool_calls": 5,
    "presence_penalty": 0,
    "frequency_penalty": 0.5,
    "service_tier": "auto",
    "safety_identifier": "s",
    "prompt_cache_retention": "24h",
    "stream_options": {"include_obfuscation": False},
    "prompt": {"id": "pmpt_1", "variables": {"a": "b"}},
    "client_metadata": {"a": "b"},
    "context_management": [{"type": "compaction", "compact_threshold": 1000}],
}
COMPACT = {"model": "m1", "input": ITEMS, "instructions": "Keep names."}
CONVERSATION = {"items": [{"role": "user", "content": "hello"}, ITEMS[3], ITEMS[4]], "metadata": {"topic": "x"}}
UPDATE = {"metadata": {"topic": "y"}}
ADD_ITEMS = {"items": [{"role": "user", "content": [{"type": "input_text", "text": "more"}]}, ITEMS[2]]}

# --- the mutator ---------------------------------------------------------------------------------

BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc", b"a\xc0\xafb", b"\xf4\x90\x80\x80"]
RAW_VALUES = [
    b"1e400", b"-1e400", b"123456789012345678901234567890", b"-99999999999999999999", b"1" * 5000,
    b"0." + b"1" * 400, b'"\\ud800"', b'"\\udc00x"', b"[" * 70 + b"]" * 70, b"{" + b'"a":{' * 80 + b"}" * 81,
    b"[" * 3000 + b"]" * 3000,
]
WHOLE_BODIES = [
    b"", b" ", b"\n", b"null", b"[]", b"[{}]", b'"x"', b"1", b"true", b"{", b'{"model": ', b"{}", b"not json",
    b"\xff\xfe{}", b"\xef\xbb\xbf{}", b"{" + b'"a":{' * 5000 + b"}" * 5001, b"[" * 100000, b"\x00" * 10,
    b'{"model": "m1", "input": "x"} trailing', b'{"model": "m1", "model": 5}',
]


# field names from every shape a request holds: added where they were not, with a bad value
KNOWN_KEYS = [
    "type", "role", "content", "text", "id", "name", "tools", "format", "parameters", "call_id", "output",
    "arguments", "input", "summary", "encrypted_content", "image_url", "file_data", "file_url", "filename", "mode",
    "function", "namespace", "items", "metadata", "status", "phase", "strict", "schema", "definition", "syntax",
    "refusal", "detail", "success", "is_error", "model", "instructions", "previous_response_id", "conversation",
    "tool_choice", "background", "stream", "generate", "include", "stop", "reasoning", "effort", "verbosity",
]


def _bad_value(rnd: random.Random) -> Any:
    return rnd.choice([
        None, True, False, 0, -1, 1.5, 2**64, -(10**20), 1e308, "", "x", "\x00", "\u00e9\U0001f600", "A" * 5000,
        [], [None], ["x"], [[]], [{"type": None}], {}, {"type": None}, {"type": []}, {"type": {}},
        {"a": {"b": {"c": []}}}, {"text": ["x"]},
    ])


class Mutator:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def _paths(self, value: Any, prefix: tuple = ()) -> list[tuple]:
        out = []
        if isinstance(value, dict):
            for k, v in value.items():
                out.append(prefix + (k,))
                out += self._paths(v, prefix + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                out.append(prefix + (i,))
                out += self._paths(v, prefix + (i,))
        return out

    def body(self, seed: dict[str, Any], whole: float = 0.12) -> bytes:
        """``seed`` with one to three mutations, as the bytes a client would send."""
        rnd = self.rnd
        if rnd.random() < whole:
            body = rnd.choice(WHOLE_BODIES)
            if rnd.random() < 0.3:  # a valid body cut anywhere
                full = json.dumps(seed).encode()
                body = full[: rnd.randrange(len(full))]
            return body
        value = copy.deepcopy(seed)
        raws: dict[str, bytes] = {}
        for _ in range(rnd.choice((1, 1, 1, 2, 2, 3))):
            paths = self._paths(value)
            if not paths:
                break
            path = rnd.choice(paths)
            parent = value
            for key in path[:-1]:
                parent = parent[key]
            key = path[-1]
            op = rnd.random()
            if op < 0.45:
                parent[key] = _bad_value(rnd)
            elif op < 0.6:  # a raw token no Python value encodes to
                marker = f"@@raw{len(raws)}@@"
                raws[json.dumps(marker)] = rnd.choice(RAW_VALUES)
                parent[key] = marker
            elif op < 0.72:  # invalid UTF-8 inside a string
                marker = f"@@utf{len(raws)}@@"
                raws[marker] = rnd.choice(BAD_UTF8)
                old = parent[key]
                parent[key] = (old[:3] if isinstance(old, str) else "ab") + marker
            elif op < 0.82:
                if isinstance(parent, dict):
                    del parent[key]
                else:
                    parent.pop(key)
            elif op < 0.92:
                parent[key] = [parent[key]] if rnd.random() < 0.5 else {"value": parent[key]}
            elif isinstance(parent, dict):
                name = rnd.choice(KNOWN_KEYS) if rnd.random() < 0.7 else f"unknown_{rnd.randrange(100)}"
                parent[name] = _bad_value(rnd)
        out = json.dumps(value, ensure_ascii=rnd.random() < 0.5).encode()
        for marker, raw in raws.items():
            out = out.replace(marker.encode(), raw)
        return out


# odd path segments and query values
SEGMENTS = ["x", "resp_", "%00", "%ff", "%2F", "%2F%2F", "..", "", "%20", "r\u00e9sp", "%F0%9F%98%80", "a%0Ab", "a" * 3000, "null", "-1", "9" * 40]
QUERY_VALUES = ["-1", "0", "1", "20", "100", "101", "99999999999999999999", "-99999999999999999999", "1e3", "abc", "",
                " 5", "9" * 5000, "%ff", "true", "maybe", "asc", "desc", "%00"]


# --- the server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """Every upstream kind (each path answers in its own format) behind one SQLite-backed server."""
    up = Upstream()

    def default_reply(path: str) -> Reply:
        if path.endswith("/messages"):
            return Reply(anthropic_text("ok"))
        if path.endswith("/responses"):
            return Reply(responses_text("ok"))
        return Reply(text_stream("ok"))

    up.default_reply = default_reply  # type: ignore[method-assign]
    up.start()
    tmp = tmp_path_factory.mktemp("fuzz")
    config = f"""
[server]
api_keys = ["{TEST_KEY}"]

[store]
backend = "sqlite"
path = "{tmp / 'fuzz.db'}"

[providers.chat]
kind = "openai-chat"
base_url = "{up.base_url}"

[providers.claude]
kind = "anthropic"
base_url = "{up.base_url}"
api_key = "sk-ant-test"

[providers.resp]
kind = "openai-responses"
base_url = "{up.base_url}"

[[routes]]
model = "claude-*"
provider = "claude"

[[routes]]
model = "resp-*"
provider = "resp"

[[routes]]
model = "*"
provider = "chat"
"""
    server = Server(tmp, [], config=config)
    yield server
    server.stop()
    up.stop()


class Checker:
    """Collects every answer that breaks the rules, so one run reports them all."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.count = 0

    def fail(self, what: str, detail: str) -> None:
        self.failures.append(f"{what}: {detail}")

    def http(self, what: str, r: httpx.Response, method: str) -> None:
        self.count += 1
        ctype = r.headers.get("content-type", "")
        if r.status_code >= 500 or 300 <= r.status_code < 400:
            self.fail(what, f"{r.status_code} {r.text[:300]}")
        elif r.status_code >= 400 and method != "HEAD":  # HEAD: the envelope's headers, no body
            try:
                err = r.json()["error"]
                assert set(err) >= {"message", "type", "param", "code"} and err["message"]
                assert ctype.startswith("application/json")
            except Exception:  # noqa: BLE001 - reported with the request
                self.fail(what, f"{r.status_code} not an envelope: {ctype} {r.text[:300]!r}")
        elif method != "HEAD" and r.content:
            if ctype.startswith("text/event-stream"):
                if not r.text.endswith("data: [DONE]\n\n"):
                    self.fail(what, f"{r.status_code} stream without its end: {r.text[-300:]!r}")
            elif ctype.startswith("application/json"):
                try:
                    r.json()
                except ValueError:
                    self.fail(what, f"{r.status_code} not JSON: {r.text[:300]!r}")

    def report(self, server: Server) -> None:
        log = server.log()
        assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
        assert not self.failures, f"{len(self.failures)} of {self.count} answers broke the rules:\n" + "\n".join(
            self.failures[:25]
        )


def n(count: int) -> int:
    return max(1, int(count * SCALE))


def test_fuzz_http_routes(fuzz_server):
    """Every HTTP route with mutated bodies, path segments and query strings."""
    m = Mutator(SEED)
    rnd = m.rnd
    check = Checker()
    base = fuzz_server.url
    json_headers = {**AUTH, "content-type": "application/json"}
    with httpx.Client(timeout=15) as client:
        # objects for the id routes to find: a stored response, a background one, a conversation
        stored = client.post(base + "/responses", json={"model": "m1", "input": "hi"}, headers=AUTH).json()["id"]
        bg = client.post(base + "/responses", json={"model": "m1", "input": "hi", "background": True}, headers=AUTH).json()["id"]
        conv = client.post(base + "/conversations", json=CONVERSATION, headers=AUTH).json()["id"]
        item = client.get(f"{base}/conversations/{conv}/items", headers=AUTH).json()["data"][0]["id"]

        def send(method: str, url: str, body: bytes | None = None, headers: dict = json_headers) -> None:
            what = f"{method} {url[len(base):][:200]} body={body[:200]!r}" if body is not None else f"{method} {url[len(base):][:200]}"
            try:
                r = client.request(method, url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                check.fail(what, f"{type(exc).__name__}: {exc}")
                return
            check.http(what, r, method)

        # the seeds themselves are valid for every upstream kind: mutations start near success
        compaction = client.post(base + "/responses/compact", json=COMPACT, headers=AUTH).json()["output"][0]
        with_refs = {**CREATE, "input": [*ITEMS, {"type": "item_reference", "id": item}, compaction]}
        for model in ("m1", "claude-x", "resp-x"):
            for seed in (CREATE, with_refs, {**CREATE, "stream": True}):
                r = client.post(base + "/responses", json={**seed, "model": model}, headers=AUTH)
                assert r.status_code == 200, (model, r.text)
            assert client.post(base + "/responses/compact", json={**COMPACT, "model": model}, headers=AUTH).status_code == 200
        for path, seed in (("/conversations", CONVERSATION), (f"/conversations/{conv}", UPDATE), (f"/conversations/{conv}/items", ADD_ITEMS)):
            r = client.post(base + path, json=seed, headers=AUTH)
            assert r.status_code == 200, (path, r.text)

        def model_variant(seed: dict) -> dict:
            seed = dict(seed)
            seed["model"] = rnd.choice(["m1", "claude-x", "resp-x"])
            return seed

        for _ in range(n(220)):
            send("POST", base + "/responses", m.body(model_variant(CREATE)))
        for _ in range(n(100)):
            send("POST", base + "/responses", m.body({**model_variant(CREATE), "stream": True}))
        for _ in range(n(30)):
            send("POST", base + "/responses", m.body({**model_variant(CREATE), "background": True, "stream": rnd.random() < 0.5}))
        for _ in range(n(30)):
            seed = {**CREATE, "store": False, "previous_response_id": stored} if rnd.random() < 0.5 else {**CREATE, "conversation": {"id": conv}}
            send("POST", base + "/responses", m.body(seed))
        # the item kinds that resolve against the store or the server's seal
        for _ in range(n(30)):
            send("POST", base + "/responses", m.body(model_variant(with_refs)))
        for _ in range(n(60)):
            send("POST", base + "/responses/compact", m.body(model_variant(COMPACT)))
        for _ in range(n(60)):
            send("POST", base + "/conversations", m.body(CONVERSATION))
        for _ in range(n(40)):
            send("POST", f"{base}/conversations/{conv}", m.body(UPDATE))
        for _ in range(n(60)):
            send("POST", f"{base}/conversations/{conv}/items", m.body(ADD_ITEMS))

        ids = {"resp": [stored, bg], "conv": [conv], "item": [item]}

        def seg(kind: str) -> str:
            return rnd.choice(ids[kind]) if rnd.random() < 0.4 else rnd.choice(SEGMENTS)

        def query(names: list[str]) -> str:
            parts = [f"{rnd.choice(names)}={rnd.choice(QUERY_VALUES)}" for _ in range(rnd.randint(0, 3))]
            return "?" + "&".join(parts) if parts else ""

        stream_q = ["stream", "starting_after", "include[]", "include_obfuscation", "x"]
        page_q = ["limit", "order", "after", "before", "include[]"]
        for _ in range(n(180)):
            route = rnd.randrange(9)
            if route == 0:
                send("GET", f"{base}/responses/{seg('resp')}{query(stream_q)}", headers=AUTH)
            elif route == 1:
                send("GET", f"{base}/responses/{bg}?stream=true&starting_after={rnd.choice(QUERY_VALUES)}", headers=AUTH)
            elif route == 2:
                send("GET", f"{base}/responses/{seg('resp')}/input_items{query(page_q)}", headers=AUTH)
            elif route == 3:
                send("POST", f"{base}/responses/{seg('resp')}/cancel", m.body({}, whole=0.5))
            elif route == 4:
                send("GET", f"{base}/conversations/{seg('conv')}{query(page_q)}", headers=AUTH)
            elif route == 5:
                send("GET", f"{base}/conversations/{seg('conv')}/items{query(page_q)}", headers=AUTH)
            elif route == 6:
                send("GET", f"{base}/conversations/{seg('conv')}/items/{seg('item')}", headers=AUTH)
            elif route == 7:
                send("GET", f"{base}/models{query(['limit', 'x'])}", headers=AUTH)
            else:  # a method a route does not have, with or without a body
                method = rnd.choice(["PUT", "PATCH", "DELETE", "POST", "OPTIONS", "HEAD"])
                path = rnd.choice(["/models", "/responses", f"/responses/{stored}/input_items", "/conversations", "/nothing"])
                send(method, base + path, m.body(UPDATE) if method in ("PUT", "PATCH", "POST") else None)
        # deletions last: they change what the other routes find
        for _ in range(n(20)):
            send("DELETE", f"{base}/conversations/{conv}/items/{seg('item')}", headers=AUTH)
            send("DELETE", f"{base}/responses/{seg('resp')}", headers=AUTH)
            send("DELETE", f"{base}/conversations/{seg('conv')}", headers=AUTH)
    check.report(fuzz_server)


# --- WebSocket frames ----------------------------------------------------------------------------

BAD_FRAMES = [
    "", " ", "not json", "[]", "null", "1", '"response.create"', "{}", '{"type": null}', '{"type": 5}',
    '{"type": []}', '{"type": {}}', '{"type": "response.create"}', '{"type": "response.create", "model": 5}',
    '{"type": "response.create", "model": "m1", "input": [{"type": []}]}',
    '{"type": "response.create", "model": "m1", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": {}}]}',
    "{" + '"a":{' * 5000 + "}" * 5001, "[" * 3000 + "]" * 3000,
    b"\xff\xfe", b'{"type": "response.create", "model": "m1", "input": "a\xffb"}', b"{\x80}",
]


def test_fuzz_websocket_frames(fuzz_server):
    """Mutated frames of every type; after each, a good frame must still be answered."""
    m = Mutator(SEED + 1)
    rnd = m.rnd
    check = Checker()
    url = fuzz_server.url.replace("http://", "ws://") + "/responses"
    frames: list[tuple[bytes | str, bool]] = [(f, True) for f in BAD_FRAMES]
    create = {"type": "response.create", **{k: v for k, v in CREATE.items() if k != "store"}, "store": False}
    for _ in range(n(160)):
        seed = dict(create)
        seed["model"] = rnd.choice(["m1", "claude-x", "resp-x"])
        if rnd.random() < 0.2:
            seed["generate"] = False
        frames.append((m.body(seed), False))
    for _ in range(n(30)):
        frames.append((m.body({"type": "response.processed", "response_id": "resp_x"}), False))
    rnd.shuffle(frames)

    ws = connect(url, additional_headers=AUTH, max_size=None, open_timeout=10)
    try:
        for number, (frame, must_fail) in enumerate(frames):
            what = f"frame {number}: {frame[:200]!r}"
            if isinstance(frame, bytes):
                try:
                    frame = frame.decode()  # a text frame where it can be one
                except UnicodeDecodeError:
                    must_fail = True
            probe = {"type": "response.create", "model": "m1", "input": "probe", "store": False, "metadata": {"probe": str(number)}}
            try:
                ws.send(frame)
                ws.send(json.dumps(probe))
                answers = []
                while True:
                    msg = json.loads(ws.recv(timeout=15))
                    if msg["type"] in TERMINAL and msg["response"]["metadata"].get("probe") == str(number):
                        break
                    answers.append(msg)
            except (ConnectionClosed, TimeoutError) as exc:
                check.fail(what, f"the socket stopped answering: {exc!r}")
                ws.close()
                ws = connect(url, additional_headers=AUTH, max_size=None, open_timeout=10)
                continue
            check.count += 1
            errors = [a for a in answers if a["type"] == "error" and "status" in a]
            for err in errors:
                if not 400 <= err["status"] < 500 or not err["error"].get("message"):
                    check.fail(what, f"error frame {err}")
            ended = any(a["type"] in TERMINAL for a in answers)
            if must_fail and not errors:
                check.fail(what, f"a bad frame got no error frame: {answers[:3]}")
            if errors and ended:
                check.fail(what, f"both an error frame and a response: {answers[:3]}")
    finally:
        ws.close()
    # an upgrade anywhere else is refused with an envelope (Quart's handlers raised on it)
    for path in ("/models", "/nothing", f"/responses/{SEGMENTS[0]}", "/conversations", "/responses/compact"):
        try:
            with connect(fuzz_server.url.replace("http://", "ws://") + path, additional_headers=AUTH, open_timeout=10):
                check.fail(f"upgrade {path}", "accepted")
        except InvalidStatus as exc:
            check.count += 1
            if exc.response.status_code != 404 or "error" not in json.loads(bytes(exc.response.body)):
                check.fail(f"upgrade {path}", f"{exc.response.status_code} {exc.response.body!r}")
    check.report(fuzz_server)
