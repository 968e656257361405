"""Cassettes: ``serve --record DIR`` records a session, ``serve --replay DIR`` serves it back with
no upstream, deterministically, with state working as live; a request that differs fails naming
the field; strict mode, malformed cassettes, pacing and shutdown; ``respline cassette show|check``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from conftest import Server
from upstream import Reply, text_stream, tool_stream
from validate import checked, parse_sse

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def respline(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "respline.adapters.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def stop(server) -> int:
    server.stop()
    return server.proc.returncode


def logged(server) -> str:
    """A stopped server's log."""
    return server.log_path.read_text(errors="replace")


def replayed_twice(start_server, cassette: Path, session) -> list:
    """What ``session(url)`` got from each of two strict replays of ``cassette``, each of which
    served every recorded exchange once."""
    out = []
    for _ in range(2):
        server = start_server(["--replay", str(cassette), "--replay-strict"])
        out.append(session(server.url))
        assert stop(server) == 0
        assert "every recorded exchange was served once" in logged(server)
    return out


def text_of(response: dict) -> str:
    return "".join(
        part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"]
    )


# --- one session over every kind of state ---------------------------------------------------------


def session(url: str, up=None) -> list[bytes]:
    """An agent's session: a stored tool loop continued by previous_response_id, a conversation,
    a WebSocket store:false continuation, compaction. ``up`` (when recording) gets the scripted
    upstream's replies queued. Returns every byte respline answered, in order."""
    out: list[bytes] = []

    def queue(*replies: Reply) -> None:
        if up is not None:
            up.queue(*replies)

    def post(path: str, body: dict) -> httpx.Response:
        r = httpx.post(url + path, json=body, timeout=30)
        out.append(r.content)
        assert r.status_code == 200, r.text
        return r

    # 1. a stored tool loop, streamed, reasoning sealed, continued by previous_response_id
    queue(
        Reply(tool_stream("get_weather", '{"city": "Paris"}', call_id="call_w1", reasoning="Look it up.")),
        Reply(text_stream("Sunny ", "in Paris.")),
    )
    body = {"model": "m", "input": "Weather in Paris?", "tools": TOOLS, "stream": True, "include": ["reasoning.encrypted_content"]}
    first = checked(parse_sse(post("/responses", body).content))[-1]["response"]
    call = next(o for o in first["output"] if o["type"] == "function_call")
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    sealed = next(o for o in first["output"] if o["type"] == "reasoning")["encrypted_content"]
    assert sealed.startswith("rsp2.")
    body = {
        "model": "m",
        "previous_response_id": first["id"],
        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "18C, sunny"}],
        "tools": TOOLS,
        "stream": True,
    }
    second = checked(parse_sse(post("/responses", body).content))[-1]["response"]
    assert text_of(second) == "Sunny in Paris."

    # 2. a conversation
    queue(Reply(text_stream("Noted, Ada.")), Reply(text_stream("You are Ada.")))
    conv = post("/conversations", {"metadata": {"topic": "names"}}).json()
    post("/responses", {"model": "m", "conversation": conv["id"], "input": "My name is Ada."})
    answer = post("/responses", {"model": "m", "conversation": conv["id"], "input": "Who am I?"}).json()
    assert text_of(answer) == "You are Ada."

    # 3. WebSocket mode: a store:false chain continued on the socket with only the new input
    queue(Reply(text_stream("One.")), Reply(text_stream("Two.")))
    with ws_connect(url.replace("http://", "ws://") + "/responses", additional_headers={"openai-beta": "responses_websockets=2026-02-06"}) as ws:
        rid = None
        for text in ("Count.", "Again."):
            frame = {"type": "response.create", "model": "m", "input": text, "store": False}
            if rid is not None:
                frame["previous_response_id"] = rid
            ws.send(json.dumps(frame))
            events = []
            while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
                message = ws.recv(timeout=10)
                out.append(message.encode())
                events.append(json.loads(message))
            checked(events)
            rid = events[-1]["response"]["id"]
        assert text_of(events[-1]["response"]) == "Two."

    # 4. compaction: the summary comes back sealed, and the next turn starts from it
    queue(Reply(text_stream("Ada asked about the weather in Paris.")), Reply(text_stream("Still sunny.")))
    history = [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "Sunny in Paris."}]
    item = post("/responses/compact", {"model": "m", "input": history}).json()["output"][0]
    assert item["type"] == "compaction"
    final = post("/responses", {"model": "m", "input": [item, {"role": "user", "content": "And now?"}], "store": False}).json()
    assert text_of(final) == "Still sunny."
    return out


@pytest.fixture
def recorded(start_server, upstream, tmp_path) -> Path:
    """The session above, recorded against the scripted upstream."""
    cassette = tmp_path / "cassette"
    server = start_server(["--upstream", upstream.base_url, "--record", str(cassette)])
    session(server.url, upstream)
    assert len(upstream.requests) == 8
    assert stop(server) == 0
    upstream.reset()
    return cassette


def test_a_recorded_session_replays_byte_for_byte_with_no_upstream(recorded, start_server, upstream):
    meta = json.loads((recorded / "cassette.json").read_text())
    assert meta["format"] == "respline-cassette" and meta["respline"]
    assert [e["dir"] for e in meta["exchanges"]] == [f"{n:04d}" for n in range(1, 9)]
    assert {e["kind"] for e in meta["exchanges"]} == {"openai-chat"}
    assert "api_key" not in meta["providers"]["upstream"] and "headers" not in meta["providers"]["upstream"]
    first = recorded / "0001"
    assert json.loads((first / "request.json").read_text())["messages"][-1] == {"role": "user", "content": "Weather in Paris?"}
    assert (first / "upstream.sse").read_bytes().endswith(b"data: [DONE]\n\n")

    transcripts = replayed_twice(start_server, recorded, session)
    assert transcripts[0] == transcripts[1]  # ids, timestamps and sealed reasoning included
    assert upstream.requests == []


def test_a_changed_request_fails_naming_the_field(start_server, upstream, tmp_path):
    """A stateless agent that resends its history, with one tool argument changed in replay."""
    cassette = tmp_path / "cassette"
    server = start_server(["--upstream", upstream.base_url, "--record", str(cassette)])
    upstream.queue(Reply(text_stream("It printed hi.")))

    def history(cmd: str) -> list[dict]:
        return [
            {"role": "user", "content": "Run it"},
            {"type": "function_call", "call_id": "call_1", "name": "exec", "arguments": json.dumps({"cmd": cmd, "timeout": 5})},
            {"type": "function_call_output", "call_id": "call_1", "output": "hi"},
        ]

    tools = [{"type": "function", "name": "exec", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}]
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": history("echo hi"), "tools": tools, "stream": True})
    assert r.status_code == 200
    stop(server)

    server = start_server(["--replay", str(cassette)])
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": history("echo bye"), "tools": tools, "stream": True})
    assert r.status_code == 400  # an envelope before any byte streamed
    err = r.json()["error"]
    assert err["code"] == "cassette_mismatch"
    assert "closest is exchange 0001" in err["message"]
    assert 'differs at messages[1].tool_calls[0].function.arguments.cmd: recorded "echo hi", sent "echo bye"' in err["message"]
    assert "more" not in err["message"]  # only that field differs
    # over WebSocket: an error frame
    with ws_connect(server.url.replace("http://", "ws://") + "/responses") as ws:
        ws.send(json.dumps({"type": "response.create", "model": "m", "input": history("echo bye"), "tools": tools}))
        frame = json.loads(ws.recv(timeout=10))
    assert frame["type"] == "error" and frame["status"] == 400
    assert frame["error"]["code"] == "cassette_mismatch" and "arguments.cmd" in frame["error"]["message"]
    # a background run cannot get an envelope: it fails with the same message
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": history("echo bye"), "tools": tools, "background": True})
    rid = r.json()["id"]
    deadline = time.monotonic() + 10
    while (got := httpx.get(f"{server.url}/responses/{rid}").json())["status"] not in ("failed", "completed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert got["status"] == "failed" and "arguments.cmd" in got["error"]["message"]
    # the same request as recorded still replays
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": history("echo hi"), "tools": tools})
    assert text_of(r.json()) == "It printed hi."


def test_strict_replay_fails_at_shutdown_on_unused_and_repeated_exchanges(start_server, upstream, tmp_path):
    cassette = tmp_path / "cassette"
    server = start_server(["--upstream", upstream.base_url, "--record", str(cassette)])
    upstream.queue(Reply(text_stream("A.")), Reply(text_stream("B.")))
    for text in ("a", "b"):
        httpx.post(server.url + "/responses", json={"model": "m", "input": text})
    stop(server)

    strict = start_server(["--replay", str(cassette), "--replay-strict"])
    for _ in range(2):  # "a" twice, "b" never
        r = httpx.post(strict.url + "/responses", json={"model": "m", "input": "a"})
        assert text_of(r.json()) == "A."
    assert httpx.post(strict.url + "/responses", json={"model": "m", "input": "c"}).status_code == 400
    assert stop(strict) == 3
    line = next(line for line in logged(strict).splitlines() if "replay strict" in line)
    assert "1 of 2 recorded exchanges never requested (0002)" in line
    assert "1 served more than once (0001 x2)" in line
    assert "1 requests matched nothing" in line

    lenient = start_server(["--replay", str(cassette)])
    httpx.post(lenient.url + "/responses", json={"model": "m", "input": "a"})
    assert stop(lenient) == 0
    assert "never requested (0002)" in logged(lenient)  # said, but not a failure


def test_every_exchange_is_recorded_even_a_refusal_and_a_fallback(start_server, upstream, tmp_path):
    """The first provider answers 503, the route falls back to the second: both exchanges are
    in the cassette, with their provider, and the replay takes the same path."""
    cassette = tmp_path / "cassette"
    config = f"""
[providers.first]
base_url = "{upstream.base_url}"
[providers.second]
base_url = "{upstream.base_url}"
reasoning_field = "reasoning"
[[routes]]
model = "*"
provider = "first"
fallbacks = ["second"]
"""
    server = start_server(["--record", str(cassette)], config=config)
    upstream.queue(Reply(status=503, body=b'{"error": {"message": "overloaded"}}'), Reply(text_stream("From second.")))
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": "hi"})
    assert text_of(r.json()) == "From second."
    stop(server)
    exchanges = json.loads((cassette / "cassette.json").read_text())["exchanges"]
    assert [(e["provider"], e["status"]) for e in exchanges] == [("first", 503), ("second", 200)]

    replay = start_server(["--replay", str(cassette), "--replay-strict"])
    r = httpx.post(replay.url + "/responses", json={"model": "m", "input": "hi"})
    assert text_of(r.json()) == "From second."
    assert "falling back to second" in logged(replay)
    assert stop(replay) == 0


def test_the_replay_kind_in_a_config_file(start_server, upstream, tmp_path):
    cassette = tmp_path / "cassette"
    server = start_server(["--upstream", upstream.base_url, "--record", str(cassette)])
    upstream.queue(Reply(text_stream("Recorded.")))
    httpx.post(server.url + "/responses", json={"model": "m", "input": "hi"})
    stop(server)
    config = f"""
[providers.ci]
kind = "replay"
cassette = "{cassette}"
replay_strict = true
[[routes]]
model = "agent-*"
provider = "ci"
upstream_model = "m"
"""
    server = start_server([], config=config)
    r = httpx.post(server.url + "/responses", json={"model": "agent-1", "input": "hi"})
    assert text_of(r.json()) == "Recorded."
    assert r.json()["model"] == "agent-1"
    assert stop(server) == 0


def test_paced_replay_keeps_the_recorded_timing(start_server, upstream, tmp_path):
    cassette = tmp_path / "cassette"
    server = start_server(["--upstream", upstream.base_url, "--record", str(cassette)])
    upstream.queue(Reply(text_stream("a", "b", "c", "d", "e"), delay=0.15))
    httpx.post(server.url + "/responses", json={"model": "m", "input": "hi", "stream": True})
    stop(server)
    chunks = json.loads((cassette / "0001" / "chunks.json").read_text())
    assert len(chunks) >= 5 and chunks[-1][0] >= 0.8  # one read per piece, as they came

    paced = start_server(["--replay", str(cassette), "--replay-pace", "recorded"])
    began = time.monotonic()
    gaps = []
    with httpx.stream("POST", paced.url + "/responses", json={"model": "m", "input": "hi", "stream": True}) as r:
        last = None
        for line in r.iter_lines():
            if line.startswith("event: response.output_text.delta"):
                now = time.monotonic()
                if last is not None:
                    gaps.append(now - last)
                last = now
    assert time.monotonic() - began >= chunks[-1][0] - 0.05
    assert len(gaps) == 4 and min(gaps) >= 0.1  # the deltas came apart, as recorded


def test_sigterm_during_a_paced_replay_ends_the_stream_like_an_upstream(start_server, upstream, tmp_path):
    cassette = tmp_path / "cassette"
    server = start_server(["--upstream", upstream.base_url, "--record", str(cassette)])
    upstream.queue(Reply(text_stream(*[f"w{i} " for i in range(8)]), delay=0.1))
    httpx.post(server.url + "/responses", json={"model": "m", "input": "hi", "stream": True})
    stop(server)
    # stretch the recording: after its first words the stream now pauses for a minute
    chunks = json.loads((cassette / "0001" / "chunks.json").read_text())
    assert len(chunks) > 3
    (cassette / "0001" / "chunks.json").write_text(json.dumps([[t + 60 * (i >= 3), n] for i, (t, n) in enumerate(chunks)]))

    paced = start_server(["--replay", str(cassette), "--replay-pace", "recorded"])
    body = bytearray()
    signalled = False
    with httpx.stream("POST", paced.url + "/responses", json={"model": "m", "input": "hi", "stream": True}, timeout=30) as r:
        for piece in r.iter_bytes():
            body += piece
            if b"response.output_text.delta" in body and not signalled:
                paced.proc.send_signal(signal.SIGTERM)  # once: a second one is not graceful
                signalled = True
    events = parse_sse(bytes(body))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    checked(events)
    assert paced.proc.wait(15) == 0


# --- the other upstream kinds ----------------------------------------------------------------------


def stateless_loop(url: str, up=None, first: list | None = None, second: list | None = None) -> list[bytes]:
    """Codex's way: store false, reasoning sealed into encrypted_content, the whole input resent."""
    if up is not None:
        up.queue(Reply(first), Reply(second))
    out = []
    body = {"model": "m", "input": [{"role": "user", "content": "Weather in Oslo?"}], "tools": TOOLS, "stream": True,
            "store": False, "include": ["reasoning.encrypted_content"]}
    r = httpx.post(url + "/responses", json=body, timeout=30)
    out.append(r.content)
    done = checked(parse_sse(r.content))[-1]["response"]
    call = next(o for o in done["output"] if o["type"] == "function_call")
    body["input"] += done["output"] + [{"type": "function_call_output", "call_id": call["call_id"], "output": "4C, rain"}]
    r = httpx.post(url + "/responses", json=body, timeout=30)
    out.append(r.content)
    assert text_of(checked(parse_sse(r.content))[-1]["response"]) == "Take an umbrella."
    return out


@pytest.mark.parametrize("kind", ["anthropic", "openai-responses"])
def test_anthropic_and_responses_upstreams_replay_too(kind, start_server, upstream, tmp_path):
    from upstream_formats import anthropic_text, anthropic_tool, responses_text, responses_tool

    if kind == "anthropic":
        first = anthropic_tool("get_weather", '{"city": "Oslo"}', tool_id="toolu_oslo", thinking="Check it.", signature="sig-1")
        second = anthropic_text("Take an umbrella.")
    else:
        first = responses_tool("get_weather", '{"city": "Oslo"}', call_id="call_oslo", reasoning="enc-upstream-1")
        second = responses_text("Take an umbrella.")
    cassette = tmp_path / "cassette"
    server = start_server(["--upstream", upstream.base_url, "--upstream-kind", kind, "--record", str(cassette)])
    stateless_loop(server.url, upstream, first, second)
    stop(server)
    assert {e["kind"] for e in json.loads((cassette / "cassette.json").read_text())["exchanges"]} == {kind}
    upstream.reset()
    runs = replayed_twice(start_server, cassette, stateless_loop)
    assert runs[0] == runs[1] and upstream.requests == []


# Kinds that come only through the registry: Gemini (adapters/providers/gemini/) and the NDJSON
# plug-in, a package of its own (tests/plugins/ndjson_provider). Recording wraps their transport as
# any kind's, and the replay provider plays them as their own kind.
PLUGIN_KIND_STREAMS = {
    "gemini": [
        b'data: {"candidates": [{"content": {"role": "model", "parts": [{"text": "Rain "}]}, "index": 0}]}\r\n\r\n',
        b'data: {"candidates": [{"content": {"role": "model", "parts": [{"text": "today."}]}, "finishReason": "STOP",'
        b' "index": 0}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}}\r\n\r\n',
    ],
    "ndjson": [b'{"text": "Rain "}\n{"text": "tod', b'ay."}\n{"done": "stop", "usage": {"input": 3, "output": 2}}\n'],
}


@pytest.mark.parametrize("kind", ["gemini", "ndjson"])
def test_registry_and_plugin_kinds_record_and_replay(kind, start_server, upstream, tmp_path):
    """A registry kind and a plug-in kind record and replay, here over the httpx transport (the
    recorder tees any transport); the cassette holds neither the key nor the connection keys."""
    cassette = tmp_path / "cassette"
    config = f"""
[providers.up]
kind = "{kind}"
base_url = "{upstream.base_url}"
api_key = "k-secret"
transport = "httpx"
[[routes]]
model = "*"
provider = "up"
"""

    def ask(url: str) -> list[bytes]:
        out = []
        for stream in (True, False):
            r = httpx.post(url + "/responses", json={"model": "m", "input": "Weather?", "stream": stream}, timeout=30)
            assert r.status_code == 200, r.text
            done = checked(parse_sse(r.content))[-1]["response"] if stream else r.json()
            assert text_of(done) == "Rain today."
            out.append(r.content)
        return out

    server = start_server(["--record", str(cassette)], config=config)
    upstream.queue(Reply(PLUGIN_KIND_STREAMS[kind]), Reply(PLUGIN_KIND_STREAMS[kind]))
    ask(server.url)
    stop(server)
    meta = json.loads((cassette / "cassette.json").read_text())
    assert [e["kind"] for e in meta["exchanges"]] == [kind, kind]
    assert meta["providers"]["up"]["kind"] == kind and "k-secret" not in (cassette / "cassette.json").read_text()
    assert "transport" not in meta["providers"]["up"]  # how this machine connects is not recorded
    upstream.reset()
    runs = replayed_twice(start_server, cassette, ask)
    assert runs[0] == runs[1] and upstream.requests == []


# --- malformed cassettes: a start-up error, one line, exit 2 -----------------------------------------


@pytest.fixture(scope="module")
def one_exchange(upstream_server, tmp_path_factory) -> Path:
    """A cassette of one exchange, recorded once for the module (tests copy it)."""
    tmp = tmp_path_factory.mktemp("one")
    server = Server(tmp, ["--upstream", upstream_server.base_url, "--record", str(tmp / "cassette")])
    upstream_server.reset()
    upstream_server.queue(Reply(text_stream("x")))
    httpx.post(server.url + "/responses", json={"model": "m", "input": "hi"})
    server.stop()
    upstream_server.reset()
    return tmp / "cassette"


def _malformed(cassette: Path, how: str) -> None:
    if how == "no cassette.json":
        (cassette / "cassette.json").unlink()
    elif how == "cassette.json not JSON":
        (cassette / "cassette.json").write_text("{nope")
    elif how == "a field of the wrong type":
        meta = json.loads((cassette / "cassette.json").read_text())
        meta["exchanges"][0]["status"] = "ok"
        (cassette / "cassette.json").write_text(json.dumps(meta))
    elif how == "no upstream.sse":
        (cassette / "0001" / "upstream.sse").unlink()
    elif how == "request.json not JSON":
        (cassette / "0001" / "request.json").write_text("{")
    elif how == "chunks disagree with the stream":
        (cassette / "0001" / "upstream.sse").write_bytes(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    "how, says",
    [
        ("no cassette.json", "cassette.json is missing"),
        ("cassette.json not JSON", "cassette.json: not valid JSON"),
        ("a field of the wrong type", "$.exchanges[0].status"),
        ("no upstream.sse", "exchange 0001: upstream.sse is missing"),
        ("request.json not JSON", "0001/request.json: not valid JSON"),
        ("chunks disagree with the stream", "chunks.json lists"),
    ],
)
def test_a_malformed_cassette_is_a_start_up_error(one_exchange, tmp_path, how, says):
    cassette = tmp_path / "cassette"
    shutil.copytree(one_exchange, cassette)
    _malformed(cassette, how)
    for args in (["serve", "--port", "0", "--replay", str(cassette)], ["cassette", "check", str(cassette)]):
        out = respline(*args)
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("respline: cassette ") and says in lines[0], out.stderr


def test_start_up_errors_of_record_and_replay(tmp_path, upstream):
    out = respline("serve", "--port", "0", "--replay", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "no such directory" in out.stderr
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cassette.json").write_text("{}")
    out = respline("serve", "--port", "0", "--upstream", upstream.base_url, "--record", str(tmp_path / "c"))
    assert out.returncode == 2 and "already holds a cassette" in out.stderr
    out = respline("serve", "--port", "0", "--replay", str(tmp_path / "c"), "--upstream", upstream.base_url)
    assert out.returncode == 2 and "does not go with --upstream" in out.stderr
    out = respline("serve", "--port", "0", "--replay-strict")
    assert out.returncode == 2 and "go with --replay" in out.stderr


# --- respline cassette show | check -----------------------------------------------------------------


def test_show_and_check(recorded):
    out = respline("cassette", "show", str(recorded))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "provider upstream: openai-chat" in text
    assert 'get_weather({"city": "Paris"})' in text
    assert "8 turns; tools called: get_weather x1; tokens: 80 in, 40 out" in text
    assert '"You are Ada."' in text

    out = respline("cassette", "check", str(recorded))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "this is respline " in out.stdout and "by respline " in out.stdout
    assert out.stdout.strip().endswith("ok: 8 exchanges replay")

    # matched differently now (its ignore list changed): check says to re-record
    meta = json.loads((recorded / "cassette.json").read_text())
    meta["ignore"]["keys"] = []
    (recorded / "cassette.json").write_text(json.dumps(meta))
    out = respline("cassette", "check", str(recorded))
    assert out.returncode == 1
    assert "FAILS: its request is now matched by another key" in out.stdout


def test_recording_the_demo_model(start_server, tmp_path):
    """The demo (no upstream at all) records like any provider and replays with its tool call."""
    cassette = tmp_path / "demo"
    server = start_server(["--record", str(cassette)])
    r = httpx.post(server.url + "/responses", json={"model": "demo", "input": "hello", "stream": True})
    live = checked(parse_sse(r.content))
    stop(server)
    server = start_server(["--replay", str(cassette), "--replay-strict"])
    r = httpx.post(server.url + "/responses", json={"model": "demo", "input": "hello", "stream": True})
    replayed = checked(parse_sse(r.content))
    assert text_of(replayed[-1]["response"]) == text_of(live[-1]["response"])
    assert stop(server) == 0
