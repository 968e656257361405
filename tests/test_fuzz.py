"""A seeded fuzzer over every route, WebSocket frame and request header, through a real server.

Each request starts from a valid body (or path segment, or query string) and takes one to three
mutations: a field set to a wrong JSON type (lists and objects where strings go, huge numbers,
deep nesting, invalid UTF-8 inside a string), a field removed, an unknown one added, a value
wrapped in a list or object; or the whole body replaced (empty, not JSON, truncated, not an
object, nested thousands deep, not UTF-8). Every answer must be a 2xx or a JSON error envelope
with a status below 500, every bad WebSocket frame an error frame on a socket that still serves
the next good frame, and the server log must hold no traceback.

The seeds cover every create field and item kind (``compaction_trigger``, ``tool_search_call`` /
``tool_search_output``, ``additional_tools``, ``context_management``, ``truncation``,
``max_tool_calls``, hosted tools under both route policies), ``POST /v1/responses/input_tokens``,
``response.steer`` / ``response.inject`` frames, and ``GET /metrics`` behind its key. Requests
carry odd ``x-request-id`` / ``traceparent`` / ``tracestate`` values (long, non-ASCII, CR/LF
attempts over a raw socket): the answer must echo exactly one ``x-request-id``, the client's only
when it is a sane token, and no header the client smuggled in. A server in this process, with
tracing on, takes the same headers and must pass only a well-formed ``traceparent`` upstream.

The sequence is fixed by a seed, so a failure reproduces; ``RESPLINE_FUZZ_SEED`` picks another
and ``RESPLINE_FUZZ_SCALE`` multiplies the counts (the default runs in a few seconds).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import TEST_KEY, Server, free_port, until_healthy
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
    # deferred tools: the client's search, what it found, tools added mid-conversation
    {"type": "tool_search_call", "id": "ts_1", "call_id": "call_s", "execution": "client",
     "arguments": {"query": "files"}, "status": "completed"},
    {"type": "tool_search_output", "call_id": "call_s", "execution": "client", "status": "completed",
     "tools": [{"type": "namespace", "name": "files", "description": "File tools.",
                "tools": [{"type": "function", "name": "stat", "defer_loading": True,
                           "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]}]},
    {"type": "additional_tools", "role": "developer",
     "tools": [{"type": "function", "name": "extra", "parameters": {"type": "object", "properties": {}}}, {"type": "web_search"}]},
    {"role": "user", "content": "go on"},
]
HOSTED_TOOLS = [
    {"type": "web_search"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "mcp", "server_label": "s", "server_url": "https://example.com/mcp"},
]
TOOLS = [
    {"type": "function", "name": "get", "description": "d", "strict": False,
     "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}},
    {"type": "custom", "name": "patch", "description": "d",
     "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
    {"type": "namespace", "name": "fs", "description": "files",
     "tools": [{"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}}]},
    {"type": "tool_search", "execution": "client", "description": "Search deferred tools.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
    *HOSTED_TOOLS,
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
# the context summarised instead of answered; compacted first (a threshold it is over); trimmed to
# the route's context window (model win-*)
TRIGGER = {**CREATE, "input": [*ITEMS, {"type": "compaction_trigger"}]}
AUTO_COMPACT = {**CREATE, "context_management": [{"type": "compaction", "compact_threshold": 1}]}
TRUNCATE = {**CREATE, "truncation": "auto", "max_output_tokens": 50}
COUNT = {k: v for k, v in CREATE.items() if k not in ("stream", "background", "store")}
# tool_choice in its other forms, hosted ones included
CHOICES = [
    "auto", "none", "required", {"type": "function", "name": "get"}, {"type": "custom", "name": "patch"},
    {"type": "function", "name": "read", "namespace": "fs"}, {"type": "tool_search"}, {"type": "web_search"},
    {"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}, {"type": "function", "name": "get"}]},
]
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
    "execution", "context_management", "compact_threshold", "truncation", "max_tool_calls",
    "stream_id", "vector_store_ids", "server_label",
]


def _bad_value(rnd: random.Random) -> Any:
    return rnd.choice([
        None, True, False, 0, -1, 1.5, 2**64, -(10**20), 1e308, "", "x", "\x00", "\u00e9\U0001f600", "A" * 5000,
        "m1\r\n2026-01-01T00:00:00.000Z INFO forged: x", "m1\u2028x", 'a "quoted" = b\\',
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


# --- request headers -----------------------------------------------------------------------------

# what the server may echo of a client's x-request-id (adapters/exchange.py), and what it makes
SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
GENERATED_ID = re.compile(r"req_[0-9a-f]{24}")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
GOOD_TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
UNSAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00"
# values httpx sends as they are (bytes go out unencoded: non-ASCII, obs-text); what it refuses
# to send (CR, LF, NUL, spaces around a value) goes over a raw socket further down
ODD_IDS: list[str | bytes] = [
    "fuzz-id-1", "a" * 128, "a" * 129, "a" * 4000, "", "id with space", "a,b", "a;b=c", "<script>", '"q"',
    "%0d%0aSet-Cookie: x=1", "id\tx", "x\x7fy", "req_" + "0" * 24, "../../etc/passwd", "a\\r\\nb",
    "\u00e9t\u00e9".encode(), "\u00e9".encode("latin-1"), b"\xff\xfe\x80", "\u2028".encode(), "\u202e".encode(),
]
TRACEPARENTS: list[str | bytes] = [
    GOOD_TRACEPARENT, UNSAMPLED, f"01-{TRACE_ID}-00f067aa0ba902b7-01-future",
    f"00-{'0' * 32}-00f067aa0ba902b7-01", f"00-{TRACE_ID}-{'0' * 16}-01", f"ff-{TRACE_ID}-00f067aa0ba902b7-01",
    f"00-{TRACE_ID.upper()}-00F067AA0BA902B7-01", f"00-{TRACE_ID}-00f067aa0ba902b7", (GOOD_TRACEPARENT + ",") * 50,
    "", "-", "---", "00", "x" * 4000, "00-" + "a" * 4000, f"00-{TRACE_ID}-00f067aa0ba902b7-01 ,x",
    "00-\u00e9".encode(), b"\xff" * 40,
]
TRACESTATES: list[str | bytes] = [
    "congo=t61rcWkgMzE", "a=b,c=d", "=", "," * 200, "k" * 300 + "=v", "a=" + "v" * 3000, "a=b;c",
    "\u00e9=1".encode(), "a=b," * 40, "a=b\tc",
]


def odd_headers(rnd: random.Random) -> dict[str, str | bytes]:
    """None to three odd tracing headers."""
    out: dict[str, str | bytes] = {}
    if rnd.random() < 0.6:
        out["x-request-id"] = rnd.choice(ODD_IDS)
    if rnd.random() < 0.4:
        out["traceparent"] = rnd.choice(TRACEPARENTS)
    if rnd.random() < 0.2:
        out["tracestate"] = rnd.choice(TRACESTATES)
    return out


def echoed_id_problem(sent: str | bytes | None, got: list[str]) -> str | None:
    """What is wrong with the x-request-id values of an answer, if anything: exactly one, the
    client's own when it was a sane token (h11 strips the spaces around a value), else one the
    server made."""
    if len(got) != 1:
        return f"{len(got)} x-request-id headers: {got!r}"
    if isinstance(sent, bytes):
        sent = sent.decode("latin-1")
    sent = sent.strip(" \t") if sent is not None else None
    if sent is not None and SANE_ID.fullmatch(sent):
        return None if got[0] == sent else f"x-request-id {got[0]!r}, not the client's {sent!r}"
    return None if GENERATED_ID.fullmatch(got[0]) else f"x-request-id {got[0][:200]!r} echoed for {sent!r:.200}"


# --- the server ----------------------------------------------------------------------------------

METRICS_KEY = "fuzz-metrics-key"
MODELS = ["m1", "claude-x", "resp-x", "strict-x", "win-x"]


def fuzz_config(upstream_url: str, db: Path, metrics_address: str = "") -> str:
    """Every upstream kind, a route that rejects hosted tools, one with a small context window,
    /metrics behind a key (on an address of its own when one is given)."""
    return f"""
[server]
api_keys = ["{TEST_KEY}"]

[store]
backend = "sqlite"
path = "{db}"

[metrics]
key = "{METRICS_KEY}"
address = "{metrics_address}"

[providers.chat]
kind = "openai-chat"
base_url = "{upstream_url}"

[providers.claude]
kind = "anthropic"
base_url = "{upstream_url}"
api_key = "sk-ant-test"

[providers.resp]
kind = "openai-responses"
base_url = "{upstream_url}"

[[routes]]
model = "claude-*"
provider = "claude"

[[routes]]
model = "resp-*"
provider = "resp"

[[routes]]
model = "strict-*"
provider = "chat"
hosted_tools = "reject"

[[routes]]
model = "win-*"
provider = "chat"
context_window = 400

[[routes]]
model = "*"
provider = "chat"
"""


def for_model(seed: dict[str, Any], model: str) -> dict[str, Any]:
    """``seed`` for ``model``, still valid: a route that rejects hosted tools gets none."""
    seed = {**seed, "model": model}
    if model.startswith("strict") and seed.get("tools"):
        seed["tools"] = [t for t in seed["tools"] if t not in HOSTED_TOOLS]
    return seed


@pytest.fixture(scope="module")
def fuzz_upstream():
    """Each path answers in its own format, the token count endpoints included."""
    up = Upstream()

    def default_reply(path: str) -> Reply:
        if path.endswith("/count_tokens") or path.endswith("/input_tokens"):
            return Reply(body=b'{"input_tokens": 7}')
        if path.endswith("/messages"):
            return Reply(anthropic_text("ok"))
        if path.endswith("/responses"):
            return Reply(responses_text("ok"))
        return Reply(text_stream("ok"))

    up.default_reply = default_reply  # type: ignore[method-assign]
    up.start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def fuzz_server(fuzz_upstream, tmp_path_factory):
    """One SQLite-backed server with the config above, logging in text."""
    tmp = tmp_path_factory.mktemp("fuzz")
    server = Server(tmp, ["--log-format", "text"], config=fuzz_config(fuzz_upstream.base_url, tmp / "fuzz.db"))
    yield server
    server.stop()


# how each record of the text log starts (adapters/logs.py TextFormatter)
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ [\w.]+: ")


class Checker:
    """Collects every answer that breaks the rules, so one run reports them all."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.count = 0

    def fail(self, what: str, detail: str) -> None:
        self.failures.append(f"{what}: {detail}")

    def http(self, what: str, r: httpx.Response, method: str, sent_id: str | bytes | None = None) -> None:
        self.count += 1
        ctype = r.headers.get("content-type", "")
        problem = echoed_id_problem(sent_id, r.headers.get_list("x-request-id"))
        if problem:
            self.fail(what, problem)
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
        """Every broken answer, every distinct traceback in the log (where it was raised), and
        every log line that is not a record of its own (a client's CR/LF or U+2028 in a model
        name or a path would start one: the server logs in text, the format that can break)."""
        faults: dict[str, str] = {}
        broken: list[str] = []
        record: list[str] = []  # a record's first line and what followed it
        for line in [*server.log().splitlines(), "0000-00-00T00:00:00.000Z END x: "]:
            if not LOG_RECORD.match(line):
                record.append(line)
                continue
            if any(ln.startswith("Traceback") for ln in record[1:]):
                frames = [ln.strip() for ln in record if ln.strip().startswith("File ")]
                faults.setdefault(f"{record[-1].strip()} at {frames[-1] if frames else '?'}", record[0][:200])
            elif len(record) > 1 or (record and not LOG_RECORD.match(record[0])):
                broken += [ln[:300] for ln in record]
            record = [line]
        assert not self.failures and not faults and not broken, (
            f"{len(faults)} distinct tracebacks:\n" + "\n".join(f"  {k} ({v})" for k, v in faults.items())
            + f"\n{len(broken)} log lines that are no record:\n" + "\n".join(f"  {b!r}" for b in broken[:10])
            + f"\n{len(self.failures)} of {self.count} answers broke the rules:\n" + "\n".join(self.failures[:40])
        )


def n(count: int) -> int:
    return max(1, int(count * SCALE))


def test_fuzz_http_routes(fuzz_server):
    """Every HTTP route with mutated bodies, path segments, query strings and tracing headers."""
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

        def send(method: str, url: str, body: bytes | None = None, headers: dict = json_headers) -> httpx.Response | None:
            odd = odd_headers(rnd)
            what = f"{method} {url[len(fuzz_server.base):][:200]}" + (f" body={body[:200]!r}" if body is not None else "")
            what += f" headers={ {k: v[:60] for k, v in odd.items()} }" if odd else ""
            try:
                r = client.request(method, url, content=body, headers={**headers, **odd})
            except httpx.HTTPError as exc:
                check.fail(what, f"{type(exc).__name__}: {exc}")
                return None
            check.http(what, r, method, odd.get("x-request-id"))
            return r

        # the seeds themselves are valid for every upstream kind: mutations start near success
        compaction = client.post(base + "/responses/compact", json=COMPACT, headers=AUTH).json()["output"][0]
        with_refs = {**CREATE, "input": [*ITEMS, {"type": "item_reference", "id": item}, compaction]}
        for model in MODELS:
            for seed in (CREATE, with_refs, {**CREATE, "stream": True}, TRIGGER, {**AUTO_COMPACT, "stream": True}, TRUNCATE):
                r = client.post(base + "/responses", json=for_model(seed, model), headers=AUTH)
                assert r.status_code == 200, (model, seed is TRIGGER, r.text)
                if seed is TRIGGER or seed is AUTO_COMPACT:
                    assert "compaction" in r.text, r.text
            r = client.post(base + "/responses/input_tokens", json=for_model(COUNT, model), headers=AUTH)
            assert r.status_code == 200 and isinstance(r.json()["input_tokens"], int), (model, r.text)
            assert client.post(base + "/responses/compact", json={**COMPACT, "model": model}, headers=AUTH).status_code == 200
        for path, seed in (("/conversations", CONVERSATION), (f"/conversations/{conv}", UPDATE), (f"/conversations/{conv}/items", ADD_ITEMS)):
            r = client.post(base + path, json=seed, headers=AUTH)
            assert r.status_code == 200, (path, r.text)
        r = client.post(base + "/responses", json=for_model(CREATE, "strict-x") | {"tools": HOSTED_TOOLS}, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_tool", r.text

        for choice in CHOICES:  # hosted ones: dropped with their tools (the default policy)
            for model in ("m1", "resp-x"):
                r = client.post(base + "/responses", json={**for_model(CREATE, model), "tool_choice": choice}, headers=AUTH)
                assert r.status_code == 200, (model, choice, r.text)

        def model_variant(seed: dict) -> dict:
            seed = for_model(seed, rnd.choice(MODELS))
            if rnd.random() < 0.15:
                seed["tool_choice"] = rnd.choice(CHOICES)
            return seed

        for _ in range(n(170)):
            send("POST", base + "/responses", m.body(model_variant(CREATE)))
        for _ in range(n(70)):
            send("POST", base + "/responses", m.body({**model_variant(CREATE), "stream": True}))
        for _ in range(n(25)):
            send("POST", base + "/responses", m.body({**model_variant(CREATE), "background": True, "stream": rnd.random() < 0.5}))
        for _ in range(n(25)):
            seed = {**CREATE, "store": False, "previous_response_id": stored} if rnd.random() < 0.5 else {**CREATE, "conversation": {"id": conv}}
            send("POST", base + "/responses", m.body(seed))
        # the item kinds that resolve against the store or the server's seal
        for _ in range(n(25)):
            send("POST", base + "/responses", m.body(model_variant(with_refs)))
        # the context compacted (on request, over a threshold) or trimmed to the route's window
        for _ in range(n(60)):
            seed = {**model_variant(rnd.choice((TRIGGER, AUTO_COMPACT, TRUNCATE))), "stream": rnd.random() < 0.5}
            if rnd.random() < 0.15:
                seed["background"] = True
            send("POST", base + "/responses", m.body(seed))
        for _ in range(n(70)):
            seed = rnd.choice((COUNT, COUNT, with_refs, {**COUNT, "previous_response_id": stored}, {**COUNT, "conversation": conv}, TRIGGER))
            send("POST", base + "/responses/input_tokens", m.body(model_variant(seed)))
        for _ in range(n(40)):
            send("POST", base + "/responses/compact", m.body(model_variant(COMPACT)))
        for _ in range(n(40)):
            send("POST", base + "/conversations", m.body(CONVERSATION))
        for _ in range(n(30)):
            send("POST", f"{base}/conversations/{conv}", m.body(UPDATE))
        for _ in range(n(40)):
            send("POST", f"{base}/conversations/{conv}/items", m.body(ADD_ITEMS))

        ids = {"resp": [stored, bg], "conv": [conv], "item": [item]}

        def seg(kind: str) -> str:
            return rnd.choice(ids[kind]) if rnd.random() < 0.4 else rnd.choice(SEGMENTS)

        def query(names: list[str]) -> str:
            parts = [f"{rnd.choice(names)}={rnd.choice(QUERY_VALUES)}" for _ in range(rnd.randint(0, 3))]
            return "?" + "&".join(parts) if parts else ""

        stream_q = ["stream", "starting_after", "include[]", "include_obfuscation", "x"]
        page_q = ["limit", "order", "after", "before", "include[]"]
        for _ in range(n(160)):
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
                method = rnd.choice(["PUT", "PATCH", "DELETE", "POST", "OPTIONS", "HEAD", "GET"])
                path = rnd.choice(["/models", "/responses", f"/responses/{stored}/input_items", "/conversations", "/nothing",
                                   "/responses/input_tokens", "/responses/compact"])
                send(method, base + path, m.body(UPDATE) if method in ("PUT", "PATCH", "POST") else None)

        # /metrics (off /v1) behind its key: odd keys, methods, paths and bodies
        root = fuzz_server.base
        good_keys = (f"Bearer {METRICS_KEY}", f"bearer {METRICS_KEY}", f"Bearer  {METRICS_KEY}", f"BEARER \t{METRICS_KEY}")
        keys = [*good_keys, f"Bearer {METRICS_KEY}x", f"Bearer {METRICS_KEY[:-1]}", "Bearer", METRICS_KEY, f"Basic {METRICS_KEY}",
                f"Bearer {TEST_KEY}", "Bearer " + "k" * 4000, "Bearer \u00e9".encode(), b"Bearer \xff\xfe", None]
        for _ in range(n(50)):
            key = rnd.choice(keys)
            method = rnd.choice(["GET", "GET", "GET", "HEAD", "POST", "DELETE", "OPTIONS"])
            path = rnd.choice(["/metrics", "/metrics", "/metrics/", "/v1/metrics", "/metrics" + query(["x", "name[]"]), "/metricsx"])
            body = m.body(UPDATE, whole=0.5) if method == "POST" else None
            r = send(method, root + path, body, headers={} if key is None else {"authorization": key})
            if r is not None and path == "/metrics" and key == f"Bearer {METRICS_KEY}" and method == "GET":
                if r.status_code != 200 or "respline_requests_total" not in r.text:
                    check.fail("GET /metrics with its key", f"{r.status_code} {r.text[:300]!r}")
            elif r is not None and path == "/metrics" and r.status_code == 200 and key not in good_keys:
                check.fail(f"{method} /metrics with {key!r:.60}", "answered without the key")

        # deletions last: they change what the other routes find
        for _ in range(n(15)):
            send("DELETE", f"{base}/conversations/{conv}/items/{seg('item')}", headers=AUTH)
            send("DELETE", f"{base}/responses/{seg('resp')}", headers=AUTH)
            send("DELETE", f"{base}/conversations/{seg('conv')}", headers=AUTH)
    check.report(fuzz_server)


# --- request heads no HTTP client would send -----------------------------------------------------

# header lines with CR, LF, NUL and other bytes httpx refuses to send, and a long one: each answer
# holds no header the client smuggled in, and one sane id unless hypercorn refused the head itself
GENERATED = "generated"
RAW_HEADERS: list[tuple[bytes, str | None]] = [  # (header lines, the id echoed; None: hypercorn refuses the head)
    (b"x-request-id: good-crlf\r\nx-injected: 1", "good-crlf"),
    (b"x-request-id: good-lf\nx-injected: 1", "good-lf"),
    (b"x-request-id: bad\rx-injected: 1", None),
    (b"x-request-id: bad\r\n x-injected: 1", GENERATED),  # a folded line: one value, with spaces
    (b"x-request-id: bad\r\n\tx-injected: 1", GENERATED),
    (b"x-request-id: bad\x00x-injected: 1", None),
    (b"x-request-id: bad\x0bx", None),
    (b"x-request-id:  spaced \t", "spaced"),
    (b"x-request-id: %0d%0ax-injected:%201", GENERATED),
    (b"x-request-id: \xc3\xa9\r\nx-injected: 1", GENERATED),
    (b"x-request-id: first\r\nx-request-id: second", "first"),
    (b"x-request-id: " + b"a" * 12000, GENERATED),  # a head of one piece: hypercorn reads it whole
    (b"traceparent: " + GOOD_TRACEPARENT.encode() + b"\t\r\nx-injected: 1", GENERATED),
    (b"traceparent: 00-\r\n-x", None),
    (b"tracestate: a=b\rx-injected: 1", None),
]
RAW_TARGETS = [
    (b"GET", b"/v1/models", b""),
    (b"GET", b"/health", b""),
    (b"GET", b"/metrics", b""),
    (b"POST", b"/v1/responses", b'{"model": "m1", "input": "hi", "store": false}'),
    (b"POST", b"/v1/responses/input_tokens", b'{"model": "m1", "input": "hi"}'),
    (b"GET", b"/v1/responses/resp_x", b""),
]
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def raw_exchange(port: int, head: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_fuzz_raw_request_heads(fuzz_server):
    """CR/LF (and NUL, bare CR, folded lines) in the tracing headers, over a raw socket."""
    check = Checker()
    auth = f"authorization: Bearer {TEST_KEY}\r\n".encode()
    for header, expected in RAW_HEADERS:
        for method, target, body in RAW_TARGETS:
            extra = f"authorization: Bearer {METRICS_KEY}\r\n".encode() if target == b"/metrics" else auth
            head = (
                method + b" " + target + b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n" + extra + header + b"\r\n"
                + (b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body) if body else b"") + b"\r\n"
            )
            what = f"{method.decode()} {target.decode()} with {header[:80]!r}"
            try:
                answer = raw_exchange(fuzz_server.port, head, body)
            except OSError as exc:
                check.fail(what, f"{type(exc).__name__}: {exc}")
                continue
            check.count += 1
            top, _, rest = answer.partition(b"\r\n\r\n")
            lines = top.split(b"\r\n")
            status = int(lines[0].split(b" ")[1]) if lines[0].startswith(b"HTTP/1.1 ") else 0
            names: list[bytes] = []
            ids: list[str] = []
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep or not TOKEN.fullmatch(name) or b"\r" in value or b"\n" in value:
                    check.fail(what, f"a malformed header line {line[:200]!r}")
                names.append(name.lower())
                if name.lower() == b"x-request-id":
                    ids.append(value.strip().decode("latin-1"))
            if b"x-injected" in names:
                check.fail(what, f"a header the client smuggled in came back: {top[:500]!r}")
            if expected is None:
                # hypercorn's own answer to a head it cannot parse: no app, no id, connection closed
                if status not in (400, 431) or ids or b"connection" not in names:
                    check.fail(what, f"not hypercorn's refusal: {answer[:300]!r}")
                continue
            if not 200 <= status < 500:
                check.fail(what, f"status {status}: {answer[:300]!r}")
            if status >= 400 and b'"error"' not in rest:
                check.fail(what, f"{status} without an envelope: {answer[:300]!r}")
            problem = echoed_id_problem(None if expected == GENERATED else expected, ids)
            if problem:
                check.fail(what, problem)
    # and the server still serves
    assert httpx.get(fuzz_server.base + "/health", timeout=10).status_code == 200
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
# the id of the latest probe response (completed, in the connection's cache) replaces this
LAST = "resp_LAST_PROBE"
STEER = {
    "type": "response.steer",
    "previous_response_id": LAST,
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "also this"}]}],
    "stream_id": "lane_1",
}
STEER_TYPES = ("response.steer", "response.inject")


def _steer_kind(frame: bytes | str) -> bool:
    """Whether the server will read ``frame`` as a steer (a JSON object of a steer type)."""
    try:
        value = json.loads(frame, parse_int=len)  # (no limit on digits)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("type") in STEER_TYPES


def _steer_answer_problem(answer: dict) -> str | None:
    """The shape openai's ResponseSteerFailedEvent reads, as far as the client's own input allows."""
    err, steer = answer.get("error"), answer.get("steer")
    if not isinstance(err, dict) or err.get("type") != "invalid_request_error" or not isinstance(err.get("code"), str):
        return f"error {err!r:.300}"
    if not isinstance(err.get("message"), str) or not err["message"]:
        return "no message"
    if not isinstance(steer, dict) or not isinstance(steer.get("previous_response_id"), str):
        return f"steer {steer!r:.300}"
    if not isinstance(steer.get("input"), (str, list)):
        return f"steer.input {steer.get('input')!r:.300}"
    if not isinstance(answer.get("sequence_number"), int):
        return "no sequence_number"
    return None


def test_fuzz_websocket_frames(fuzz_server, fuzz_upstream):
    """Mutated frames of every type; after each, a good frame must still be answered."""
    m = Mutator(SEED + 1)
    rnd = m.rnd
    check = Checker()
    url = fuzz_server.url.replace("http://", "ws://") + "/responses"
    frames: list[tuple[bytes | str, bool]] = [(f, True) for f in BAD_FRAMES]
    create = {"type": "response.create", **{k: v for k, v in CREATE.items() if k != "store"}, "store": False}
    for _ in range(n(130)):
        seed = for_model(create, rnd.choice(MODELS))
        if rnd.random() < 0.2:
            seed["generate"] = False
        elif rnd.random() < 0.25:
            seed.update(rnd.choice(({"input": TRIGGER["input"]}, {"context_management": AUTO_COMPACT["context_management"]},
                                    {"truncation": "auto", "max_output_tokens": 50})))
        frames.append((m.body(seed), False))
    for _ in range(n(25)):
        frames.append((m.body({"type": "response.processed", "response_id": "resp_x"}), False))
    for _ in range(n(50)):
        seed = {**STEER, "type": rnd.choice(STEER_TYPES)}
        if rnd.random() < 0.3:
            seed["previous_response_id"] = rnd.choice(("resp_unknown", "", LAST))
        frames.append((m.body(seed, whole=0.05), False))
    rnd.shuffle(frames)

    last = "resp_none"

    def connect_ws(headers: dict | None = None):
        ws = connect(url, additional_headers={**AUTH, **(headers or {})}, max_size=None, open_timeout=10)
        sent = (headers or {}).get("x-request-id")
        problem = echoed_id_problem(sent, ws.response.headers.get_all("x-request-id"))
        if problem:
            check.fail(f"upgrade with x-request-id {sent!r:.80}", problem)
        return ws

    ws = connect_ws()
    try:
        for number, (frame, must_fail) in enumerate(frames):
            if isinstance(frame, bytes):
                frame = frame.replace(LAST.encode(), last.encode())
                try:
                    frame = frame.decode()  # a text frame where it can be one
                except UnicodeDecodeError:
                    must_fail = True
            else:
                frame = frame.replace(LAST, last)
            what = f"frame {number}: {frame[:200]!r}"
            steer = _steer_kind(frame)
            probe = {"type": "response.create", "model": "m1", "input": "probe", "store": False, "metadata": {"probe": str(number)}}
            try:
                ws.send(frame)
                ws.send(json.dumps(probe))
                answers = []
                while True:
                    msg = json.loads(ws.recv(timeout=15))
                    if msg["type"] in TERMINAL and msg["response"]["metadata"].get("probe") == str(number):
                        last = msg["response"]["id"]
                        break
                    answers.append(msg)
            except (ConnectionClosed, TimeoutError) as exc:
                check.fail(what, f"the socket stopped answering: {exc!r}")
                ws.close()
                ws = connect_ws()
                continue
            check.count += 1
            errors = [a for a in answers if a["type"] == "error" and "status" in a]
            steered = [a for a in answers if a["type"].startswith("response.steer")]
            for err in errors:
                if not 400 <= err["status"] < 500 or not err["error"].get("message"):
                    check.fail(what, f"error frame {err}")
            ended = any(a["type"] in TERMINAL for a in answers)
            if must_fail and not errors:
                check.fail(what, f"a bad frame got no error frame: {answers[:3]}")
            if errors and ended:
                check.fail(what, f"both an error frame and a response: {answers[:3]}")
            if steer:
                # answered at once, one way or the other, never left waiting
                if len(steered) + len(errors) != 1 or ended or any(a["type"] != "response.steer.failed" for a in steered):
                    check.fail(what, f"a steer answered with {answers[:3]}")
                for a in steered:
                    problem = _steer_answer_problem(a)
                    if problem:
                        check.fail(what, f"response.steer.failed: {problem}")
            elif steered:
                check.fail(what, f"a steer answer to another frame: {steered[:2]}")
        # steers while a turn streams (slowed upstream): answered at once, and the turn goes on
        for number in range(n(6)):
            fuzz_upstream.queue(Reply(text_stream("a", "b", "c", "d"), delay=0.03))
            ws.send(json.dumps({"type": "response.create", "model": "m1", "input": "slow", "store": False}))
            what = f"mid-turn steer {number}"
            try:
                running = json.loads(ws.recv(timeout=15))["response"]["id"]
                frame = m.body({**STEER, "type": rnd.choice(STEER_TYPES), "previous_response_id": running}, whole=0.0)
                ws.send(frame.decode(errors="replace"))
                answers = []
                while not answers or answers[-1]["type"] not in TERMINAL:
                    answers.append(json.loads(ws.recv(timeout=15)))
            except (ConnectionClosed, TimeoutError, KeyError) as exc:
                check.fail(what, f"the socket stopped answering: {exc!r}")
                ws.close()
                ws = connect_ws()
                continue
            check.count += 1
            replies = [a for a in answers if a["type"] == "response.steer.failed" or a["type"] == "error"]
            if answers[-1]["type"] != "response.completed" or len(replies) != (1 if _steer_kind(frame) else len(replies[:1])):
                check.fail(what, f"{frame[:200]!r} answered with {[a['type'] for a in answers]}")
            for a in replies:
                problem = _steer_answer_problem(a) if a["type"] == "response.steer.failed" else None
                if problem:
                    check.fail(what, f"response.steer.failed: {problem}")
    finally:
        ws.close()
    # the upgrade's x-request-id: echoed when sane, else one made for it
    for value in [v for v in ODD_IDS if isinstance(v, str) and "\x7f" not in v][: n(12)]:
        try:
            connect_ws({"x-request-id": value}).close()
        except (InvalidStatus, OSError) as exc:
            check.fail(f"upgrade with x-request-id {value!r:.80}", repr(exc))
    # an upgrade anywhere else is refused with an envelope (Quart's handlers raised on it); an
    # upgrade without the key with a 401 envelope
    for path, headers, status in [
        *[(p, AUTH, 404) for p in ("/models", "/nothing", f"/responses/{SEGMENTS[0]}", "/conversations", "/responses/compact")],
        ("/responses", {}, 401),
        ("/responses", {"authorization": "Bearer nope", "x-request-id": "ws-denied-1"}, 401),
    ]:
        try:
            with connect(fuzz_server.url.replace("http://", "ws://") + path, additional_headers=headers, open_timeout=10):
                check.fail(f"upgrade {path}", "accepted")
        except InvalidStatus as exc:
            check.count += 1
            if exc.response.status_code != status or "error" not in json.loads(bytes(exc.response.body)):
                check.fail(f"upgrade {path}", f"{exc.response.status_code} {exc.response.body!r}")
            problem = echoed_id_problem(headers.get("x-request-id"), exc.response.headers.get_all("x-request-id"))
            if problem:
                check.fail(f"upgrade {path} refused", problem)
    check.report(fuzz_server)


# --- traces: the same headers through a server in this process, tracing on ----------------------


def _refused_upgrade(url: str) -> tuple[int, list[str]]:
    """The status and x-request-id values of a refused WebSocket upgrade (0: it was accepted)."""
    try:
        with connect(url, additional_headers={"x-request-id": "ws-metrics-1"}, open_timeout=10):
            return 0, []
    except InvalidStatus as exc:
        try:
            envelope = json.loads(bytes(exc.response.body or b""))["error"]
        except (ValueError, KeyError, TypeError):
            envelope = None
        return exc.response.status_code if envelope else -exc.response.status_code, exc.response.headers.get_all("x-request-id")


TRACEPARENT_SHAPE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


async def test_fuzz_trace_headers(fuzz_upstream, tmp_path, caplog):
    """Odd traceparent / tracestate / x-request-id values with OpenTelemetry on: every answer is
    as the rules say, nothing is logged as an error, the upstream gets a well-formed traceparent
    (the client's trace when it sent a valid one) and every request its span."""
    import functools

    import trio
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from respline.adapters import cli
    from respline.adapters.tracing import Tracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = tmp_path / "fuzz.toml"
    metrics_port = free_port()
    config.write_text(fuzz_config(fuzz_upstream.base_url, tmp_path / "trace.db", f"127.0.0.1:{metrics_port}"))
    args = cli.parser().parse_args(["serve", "--port", "0", "--config", str(config), "--state-dir", str(tmp_path)])
    cfg = cli.build_config(args)
    sock = cli.bind("127.0.0.1", 0)
    cfg.server.port = port = sock.getsockname()[1]
    gateway, clients = cli.build_gateway(cfg)
    m = Mutator(SEED + 2)
    rnd = m.rnd
    check = Checker()
    correlated: dict[str, str] = {}  # x-request-id -> the trace id the client sent
    answered: dict[str, str] = {}  # x-request-id -> the request
    caplog.set_level("WARNING")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(cli.serve, cfg, gateway, clients, sock.detach(), tracer=Tracer(provider)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            await until_healthy(client)
            for number in range(n(60)):
                odd = odd_headers(rnd)
                if rnd.random() < 0.3:
                    odd["traceparent"] = GOOD_TRACEPARENT
                    odd["x-request-id"] = f"trace-{number}"
                    correlated[f"trace-{number}"] = TRACE_ID
                route = rnd.randrange(6)
                body: bytes | None = None
                if route < 3:
                    method, path = "POST", "/v1/responses"
                    seed = {"model": rnd.choice(MODELS), "input": "hi", "store": False, "stream": route == 1}
                    body = json.dumps(seed).encode() if route < 2 else m.body(seed)
                elif route == 3:
                    method, path, body = "POST", "/v1/responses/input_tokens", json.dumps({"model": rnd.choice(MODELS), "input": "hi"}).encode()
                elif route == 4:
                    method, path = "GET", rnd.choice(["/v1/models", "/health", "/nothing", "/v1/responses/resp_x"])
                else:  # the metrics address (no request line, no span)
                    method = rnd.choice(["GET", "GET", "HEAD", "POST"])
                    path = f"http://127.0.0.1:{metrics_port}" + rnd.choice(["/metrics", "/metrics", "/nothing", "/v1/responses"])
                    body = m.body(UPDATE, whole=0.5) if method == "POST" else None
                    if rnd.random() < 0.7:
                        odd["authorization"] = f"Bearer {METRICS_KEY}"
                headers = {**AUTH, "content-type": "application/json", **odd}
                what = f"{method} {path} headers={ {k: v[:60] for k, v in odd.items()} }"
                try:
                    r = await client.request(method, path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    check.fail(what, f"{type(exc).__name__}: {exc}")
                    continue
                check.http(what, r, method, odd.get("x-request-id"))
                if odd.get("traceparent") != UNSAMPLED and route < 5:  # (an unsampled trace: no span)
                    answered[r.headers.get("x-request-id", "")] = what
            # an upgrade on the metrics address: a 404 envelope with its id (it was hypercorn's 500)
            for path in ("/metrics", "/v1/responses"):
                status, rid = await trio.to_thread.run_sync(_refused_upgrade, f"ws://127.0.0.1:{metrics_port}{path}")
                check.count += 1
                if status != 404 or rid != ["ws-metrics-1"]:
                    check.fail(f"upgrade {path} on the metrics address", f"{status} {rid}")
        nursery.cancel_scope.cancel()
    for record in caplog.records:
        if record.levelno >= logging.ERROR or record.exc_info:
            check.fail(f"log {record.name}", record.getMessage()[:500])
    for request in fuzz_upstream.requests:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        rid = headers.get("x-request-id")
        if rid is None or "traceparent" not in headers:
            continue  # the token count endpoints are called without the request's span
        parent = headers["traceparent"]
        if not TRACEPARENT_SHAPE.fullmatch(parent):
            check.fail(f"upstream call of {rid}", f"traceparent {parent!r}")
        elif rid in correlated and parent.split("-")[1] != correlated[rid]:
            check.fail(f"upstream call of {rid}", f"traceparent {parent!r} is not the client's trace")
        state = headers.get("tracestate")
        if state is not None and (len(state) > 512 or any(not 0x20 <= ord(c) < 0x7F for c in state)):
            check.fail(f"upstream call of {rid}", f"tracestate {state[:200]!r}")
    spans = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    for rid in set(answered) - {s.attributes.get("respline.request_id") for s in spans}:
        check.fail(answered[rid], f"no span for {rid}")
    for span in spans:
        rid = span.attributes.get("respline.request_id")
        if rid in correlated and format(span.parent.span_id if span.parent else 0, "016x") != "00f067aa0ba902b7":
            check.fail(f"span of {rid}", "not a child of the client's span")
    assert not check.failures, f"{len(check.failures)} of {check.count} answers broke the rules:\n" + "\n".join(check.failures[:25])
