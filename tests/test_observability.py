"""Observability through a real server: one JSON line per request with its request id, the
Prometheus metrics each kind of traffic moves, the --workers sum, /metrics options, the
Grafana dashboard's queries, OpenTelemetry spans, and no key or text ever logged."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from conftest import ROOT, TEST_KEY, until_healthy
from upstream import USAGE, Reply, chunk, text_stream
from validate import checked, parse_sse

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
UPSTREAM_KEY = "sk-upstream-secret-4242"
DASHBOARD = ROOT / "adapters" / "grafana" / "respline-dashboard.json"


# --- helpers -----------------------------------------------------------------------------------


def lines(server) -> list[dict]:
    out = []
    for raw in server.log().splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                pass
    return out


def request_line(server, rid: str, timeout: float = 5.0) -> dict:
    """The one request line of ``rid`` (it is written when the request ends)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [ln for ln in lines(server) if ln.get("logger") == "respline.access" and ln.get("request_id") == rid]
        if found:
            assert len(found) == 1, found
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no request line for {rid}:\n{server.log()[-3000:]}")
        time.sleep(0.05)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(base: str, headers: dict | None = None) -> dict[tuple[str, frozenset], float]:
    r = httpx.get(base + "/metrics", headers=headers or {}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset], float] = {}
    for raw in r.text.splitlines():
        if not raw or raw.startswith("#"):
            continue
        m = _SAMPLE.match(raw)
        assert m, raw
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def create(server, body: dict, rid: str, headers: dict | None = None, **kw) -> httpx.Response:
    return httpx.post(
        server.url + "/responses",
        json=body,
        headers={**AUTH, "x-request-id": rid, **(headers or {})},
        timeout=30,
        **kw,
    )


CONFIG = f"""
[server]
api_keys = ["{TEST_KEY}"]

[timeouts]
connect = 0.5
first_byte = 1

[providers.up]
kind = "openai-chat"
base_url = "UPSTREAM"
api_key = "{UPSTREAM_KEY}"

[providers.spare]
kind = "openai-chat"
base_url = "UPSTREAM"
api_key = "{UPSTREAM_KEY}"

[[routes]]
model = "obs-*"
provider = "up"

[[routes]]
model = "fb-model"
provider = "up"
fallbacks = ["spare"]
"""


@pytest.fixture
def obs_server(start_server, upstream):
    return start_server(["--log-format", "json"], config=CONFIG.replace("UPSTREAM", upstream.base_url))


# --- the request line and the metrics of each kind of traffic ----------------------------------


def test_good_stream_line_and_metrics(obs_server, upstream):
    s = obs_server
    before = scrape(s.base)
    upstream.queue(Reply(text_stream("Hello", " there")))
    r = create(s, {"model": "obs-a", "input": "secret prompt words", "stream": True}, "rid-good-1")
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "rid-good-1"
    events = checked(parse_sse(r.content))
    assert events[-1]["type"] == "response.completed"
    # the request id went upstream
    assert upstream.last["headers"].get("x-request-id") == "rid-good-1"
    ln = request_line(s, "rid-good-1")
    assert ln["level"] == "info"
    assert ln["method"] == "POST" and ln["path"] == "/v1/responses" and ln["status"] == 200
    assert ln["mode"] == "sse" and ln["model"] == "obs-a"
    assert ln["provider"] == "up" and ln["upstream_model"] == "obs-a"
    assert ln["input_tokens"] == USAGE["prompt_tokens"] and ln["output_tokens"] == USAGE["completion_tokens"]
    assert ln["cached_tokens"] == 0 and ln["reasoning_tokens"] == 0
    assert ln["response_id"] == events[-1]["response"]["id"]
    assert ln["fallbacks"] == [] and ln["error"] is None
    assert 0 <= ln["ttfb_ms"] <= ln["ttft_ms"] <= ln["duration_ms"]
    assert re.fullmatch(r"[0-9a-f]{12}", ln["tenant"]) and TEST_KEY not in json.dumps(ln)
    after = scrape(s.base)
    assert delta(before, after, "respline_requests_total", route="responses", status="200", mode="sse") == 1
    assert delta(before, after, "respline_upstream_requests_total", provider="up", outcome="ok", status="200") == 1
    assert delta(before, after, "respline_tokens_total", model="obs-*", provider="up", kind="input") == 10
    assert delta(before, after, "respline_tokens_total", model="obs-*", provider="up", kind="output") == 5
    assert delta(before, after, "respline_time_to_first_token_seconds_count", model="obs-*") == 1
    assert delta(before, after, "respline_time_to_first_byte_seconds_count", model="obs-*") == 1
    assert delta(before, after, "respline_request_duration_seconds_count", model="obs-*", mode="sse") == 1
    assert value(after, "respline_open_streams") == 0


def test_json_request_generates_an_id(obs_server, upstream):
    s = obs_server
    upstream.queue(Reply(text_stream("ok")))
    r = httpx.post(s.url + "/responses", json={"model": "obs-a", "input": "hi"}, headers=AUTH, timeout=30)
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert rid.startswith("req_")
    ln = request_line(s, rid)
    assert ln["mode"] == "json" and ln["status"] == 200 and ln["response_id"] == r.json()["id"]


@pytest.mark.parametrize("status, code", [(429, "rate_limit_exceeded"), (500, None)])
def test_upstream_refusal(obs_server, upstream, status, code):
    s = obs_server
    before = scrape(s.base)
    body = json.dumps({"error": {"message": "nope", "type": "x", "code": code}}).encode()
    upstream.queue(Reply(status=status, body=body))
    rid = f"rid-up-{status}"
    r = create(s, {"model": "obs-a", "input": "hi"}, rid)
    assert r.status_code == status
    ln = request_line(s, rid)
    assert ln["status"] == status and ln["provider"] == "up" and ln["error"]
    warn = [x for x in lines(s) if x.get("request_id") == rid and x["level"] == "warning" and x["logger"] != "respline.access"]
    assert warn and str(status) in warn[0]["msg"], lines(s)[-5:]
    after = scrape(s.base)
    assert delta(before, after, "respline_upstream_requests_total", provider="up", outcome="http_error", status=str(status)) == 1
    assert delta(before, after, "respline_requests_total", route="responses", status=str(status)) == 1


def test_fallback_is_counted(obs_server, upstream):
    s = obs_server
    before = scrape(s.base)
    upstream.queue(Reply(status=503, body=b'{"error": {"message": "busy"}}'), Reply(text_stream("from spare")))
    r = create(s, {"model": "fb-model", "input": "hi"}, "rid-fb")
    assert r.status_code == 200
    ln = request_line(s, "rid-fb")
    assert ln["provider"] == "spare" and ln["fallbacks"] == ["up"]
    after = scrape(s.base)
    assert delta(before, after, "respline_fallbacks_total", from_provider="up", to_provider="spare") == 1


def test_unreachable_and_timeout(start_server, upstream):
    dead = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    cfg = CONFIG.replace("UPSTREAM", upstream.base_url) + f"""
[providers.dead]
kind = "openai-chat"
base_url = "{dead}"

[[routes]]
model = "dead"
provider = "dead"
"""
    s = start_server(["--log-format", "json"], config=cfg)
    before = scrape(s.base)
    r = create(s, {"model": "dead", "input": "hi"}, "rid-dead")
    assert r.status_code == 502
    assert request_line(s, "rid-dead")["error"] == "upstream_unreachable"
    upstream.queue(Reply(text_stream("late"), hang=2.5))
    r = create(s, {"model": "obs-a", "input": "hi"}, "rid-slow")
    assert r.status_code == 504
    assert request_line(s, "rid-slow")["error"] == "upstream_timeout"
    after = scrape(s.base)
    assert delta(before, after, "respline_upstream_requests_total", provider="dead", outcome="connect_error") == 1
    assert delta(before, after, "respline_upstream_requests_total", provider="up", outcome="timeout") == 1
    assert delta(before, after, "respline_timeouts_total", kind="first_byte") == 1


def test_errors_before_the_model(obs_server):
    s = obs_server
    before = scrape(s.base)
    r = httpx.post(s.url + "/responses", json={"model": "obs-a", "input": "x"}, headers={"x-request-id": "rid-401"})
    assert r.status_code == 401 and r.headers["x-request-id"] == "rid-401"
    assert request_line(s, "rid-401")["status"] == 401
    r = create(s, {"model": "nothing-routes-this", "input": "x"}, "rid-404")
    assert r.status_code == 404
    ln = request_line(s, "rid-404")
    assert ln["status"] == 404 and ln["error"] == "model_not_found"
    r = httpx.get(s.url + "/conversations/conv_missing", headers={**AUTH, "x-request-id": "rid-conv"})
    assert r.status_code == 404 and request_line(s, "rid-conv")["status"] == 404
    after = scrape(s.base)
    assert delta(before, after, "respline_requests_total", route="responses", status="401") == 1
    assert delta(before, after, "respline_requests_total", route="conversation", status="404") == 1
    # an unrouted model never becomes a label of its own
    assert not any("nothing-routes-this" in str(k) for k in after)


def test_client_disconnect(obs_server, upstream):
    s = obs_server
    before = scrape(s.base)
    upstream.queue(Reply(text_stream(*["w"] * 50), delay=0.1))
    with httpx.stream("POST", s.url + "/responses", json={"model": "obs-a", "input": "x", "stream": True},
                      headers={**AUTH, "x-request-id": "rid-gone"}, timeout=30) as r:
        for _ in r.iter_bytes():
            break
    ln = request_line(s, "rid-gone")
    assert ln["client_gone"] is True
    after = scrape(s.base)
    assert delta(before, after, "respline_client_disconnects_total", mode="sse") == 1


async def test_websocket_turn_line(obs_server, upstream):
    s = obs_server
    upstream.queue(Reply(text_stream("ws", " answer")))
    before = await trio.to_thread.run_sync(scrape, s.base)
    async with trio_websocket.open_websocket_url(
        f"ws://127.0.0.1:{s.port}/v1/responses", extra_headers=[("authorization", f"Bearer {TEST_KEY}"), ("x-request-id", "rid-ws")]
    ) as ws:
        await ws.send_message(json.dumps({"type": "response.create", "model": "obs-a", "input": "hi", "store": False}))
        while True:
            ev = json.loads(await ws.get_message())
            if ev["type"] in ("response.completed", "response.failed", "error"):
                break
        assert ev["type"] == "response.completed"
        during = await trio.to_thread.run_sync(scrape, s.base)
        assert value(during, "respline_websocket_connections") == 1
    ln = await trio.to_thread.run_sync(request_line, s, "rid-ws.1")
    assert ln["mode"] == "websocket" and ln["output_tokens"] == 5 and ln["response_id"] == ev["response"]["id"]
    after = await trio.to_thread.run_sync(scrape, s.base)
    assert delta(before, after, "respline_requests_total", route="responses", mode="websocket") == 1
    assert value(after, "respline_websocket_connections") == 0


def test_background_run(obs_server, upstream):
    s = obs_server
    before = scrape(s.base)
    upstream.queue(Reply(text_stream("bg"), delay=0.05))
    r = create(s, {"model": "obs-a", "input": "hi", "background": True}, "rid-bg")
    assert r.status_code == 200
    rid = r.json()["id"]
    deadline = time.monotonic() + 10
    while httpx.get(s.url + f"/responses/{rid}", headers=AUTH).json()["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ln = request_line(s, "rid-bg.run")
    assert ln["mode"] == "background" and ln["response_id"] == rid and ln["output_tokens"] == 5
    after = scrape(s.base)
    assert delta(before, after, "respline_background_runs_ended_total", state="completed") == 1
    assert value(after, "respline_background_runs") == 0


def test_no_key_or_text_is_logged(obs_server, upstream):
    s = obs_server
    upstream.queue(Reply(text_stream("PLAINOUTPUTTEXT")))
    r = create(s, {"model": "obs-a", "input": "PLAINPROMPTTEXT", "stream": True,
                   "include": ["reasoning.encrypted_content"]}, "rid-secret")
    assert r.status_code == 200
    httpx.post(s.url + "/responses", json={"model": "obs-a", "input": "x"}, headers={"authorization": "Bearer sk-wrong-key-777"})
    request_line(s, "rid-secret")
    log = s.log()
    for secret in (TEST_KEY, UPSTREAM_KEY, "sk-wrong-key-777", "PLAINPROMPTTEXT", "PLAINOUTPUTTEXT"):
        assert secret not in log, secret
    assert "rsp2." not in log  # no sealed content


# --- /metrics options, the --workers sum, the dashboard ----------------------------------------


def test_metrics_key_and_separate_address(start_server, upstream):
    from conftest import free_port

    port = free_port()
    cfg = CONFIG.replace("UPSTREAM", upstream.base_url) + f"""
[metrics]
address = "127.0.0.1:{port}"
key = "metrics-key-1"
"""
    s = start_server(["--log-format", "json"], config=cfg)
    assert httpx.get(s.base + "/metrics").status_code == 404  # not on the main port
    other = f"http://127.0.0.1:{port}"
    r = httpx.get(other + "/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    samples = scrape(other, {"authorization": "Bearer metrics-key-1"})
    assert any(n == "respline_websocket_connections" for n, _ in samples)
    assert "metrics-key-1" not in s.log()


def test_metrics_switched_off(start_server, upstream):
    cfg = CONFIG.replace("UPSTREAM", upstream.base_url) + "\n[metrics]\nenabled = false\n"
    s = start_server(["--log-format", "json"], config=cfg)
    assert httpx.get(s.base + "/metrics").status_code == 404


def test_workers_sum(start_server, upstream, tmp_path):
    s = start_server(
        ["--workers", "2", "--store", f"sqlite:{tmp_path / 'w.db'}", "--log-format", "json"],
        config=CONFIG.replace("UPSTREAM", upstream.base_url),
    )
    # fresh connections until both workers have answered (the kernel hands each accept to
    # whichever worker waits; one busy worker may take several in a row)
    n = 0
    pids: set = set()
    while n < 12 or (len(pids) < 2 and n < 80):
        upstream.queue(Reply(text_stream("x")))
        r = httpx.post(s.url + "/responses", json={"model": "obs-a", "input": "hi"}, headers=AUTH, timeout=30)
        assert r.status_code == 200
        n += 1
        if n >= 12:
            pids = {ln.get("pid") for ln in lines(s) if ln.get("logger") == "respline.access" and ln.get("path") == "/v1/responses"}
    assert len(pids) == 2, "both workers answered"
    for _ in range(4):  # whichever worker answers the scrape reports the sum
        samples = scrape(s.base)
        assert value(samples, "respline_requests_total", route="responses", status="200") == n
        assert value(samples, "respline_tokens_total", kind="input") == 10 * n


def test_dashboard_queries_name_exported_metrics(obs_server, upstream):
    s = obs_server
    upstream.queue(Reply(text_stream("x")))
    create(s, {"model": "obs-a", "input": "hi", "stream": True}, "rid-dash")
    request_line(s, "rid-dash")
    exported = {n for n, _ in scrape(s.base)}
    text = httpx.get(s.base + "/metrics").text
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    dash = json.loads(DASHBOARD.read_text())
    named = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            named |= set(re.findall(r"\b(respline_[a-z_]+)", target["expr"]))
    assert named, "the dashboard queries respline metrics"
    missing = {n for n in named if n not in exported and n not in families}
    assert not missing, missing


# --- traces ------------------------------------------------------------------------------------


async def test_trace_spans_in_memory(upstream, tmp_path):
    """A real server in this process (so its spans reach the SDK's in-memory exporter): one span
    per request, the upstream call its child, GenAI attributes, the client's trace continued and
    passed upstream."""
    import functools

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from respline.adapters import cli
    from respline.adapters.tracing import Tracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    args = cli.parser().parse_args(
        ["serve", "--port", "0", "--upstream", upstream.base_url, "--state-dir", str(tmp_path), "--log-format", "json"]
    )
    cfg = cli.build_config(args)
    sock = cli.bind("127.0.0.1", 0)
    cfg.server.port = port = sock.getsockname()[1]
    gateway, clients = cli.build_gateway(cfg)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    upstream.queue(Reply(text_stream("traced")))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(cli.serve, cfg, gateway, clients, sock.detach(), tracer=Tracer(provider)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await until_healthy(client)
            r = await client.post(
                "/v1/responses",
                json={"model": "m-traced", "input": "hi"},
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
            assert r.status_code == 200
        nursery.cancel_scope.cancel()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["POST responses"]
    child = spans["chat m-traced"]
    assert server.kind == SpanKind.SERVER and child.kind == SpanKind.CLIENT
    assert format(server.context.trace_id, "032x") == trace_id  # the client's trace, continued
    assert server.parent.span_id == 0x00F067AA0BA902B7
    assert child.parent.span_id == server.context.span_id
    assert server.attributes["gen_ai.request.model"] == "m-traced"
    assert server.attributes["gen_ai.usage.input_tokens"] == USAGE["prompt_tokens"]
    assert child.attributes["gen_ai.provider.name"] == "upstream"
    assert child.attributes["gen_ai.usage.output_tokens"] == USAGE["completion_tokens"]
    assert child.start_time >= server.start_time and child.end_time <= server.end_time
    sent = upstream.last["headers"].get("traceparent", "")
    assert sent.split("-")[1] == trace_id, sent  # passed upstream


def test_nothing_of_opentelemetry_without_its_endpoint(tmp_path):
    """Traces are opt-in: with no OTLP endpoint set, a whole server start imports nothing of it."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from respline.adapters import cli\n"
        f"args = cli.parser().parse_args(['serve', '--port', '0', '--state-dir', {str(tmp_path)!r}])\n"
        "cfg = cli.build_config(args)\n"
        "gateway, _ = cli.build_gateway(cfg)\n"
        "telemetry = cli.build_telemetry(cfg, gateway)\n"
        "print(telemetry.tracer is None, any(m.startswith('opentelemetry') for m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_log_level_and_text_format(start_server, upstream):
    quiet = start_server(["--log-format", "json"], config=CONFIG.replace("UPSTREAM", upstream.base_url).replace(
        "[server]\n", '[server]\nlog_level = "warning"\n'))
    upstream.queue(Reply(text_stream("x")))
    assert create(quiet, {"model": "obs-a", "input": "hi"}, "rid-quiet").status_code == 200
    upstream.queue(Reply(status=500, body=b'{"error": {"message": "boom"}}'))
    assert create(quiet, {"model": "obs-a", "input": "hi"}, "rid-loud").status_code == 500
    assert request_line(quiet, "rid-loud")["level"] == "warning"  # a failure still shows
    assert not [x for x in lines(quiet) if x.get("request_id") == "rid-quiet"]  # info filtered
    text = start_server(["--log-format", "text"], config=CONFIG.replace("UPSTREAM", upstream.base_url))
    upstream.queue(Reply(text_stream("x")))
    assert create(text, {"model": "obs-a", "input": "hi"}, "rid-text").status_code == 200
    deadline = time.monotonic() + 5
    while "request_id=rid-text" not in text.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(ln for ln in text.log().splitlines() if "request_id=rid-text" in ln)
    assert " INFO respline.access: request " in line and "status=200" in line and "provider=up" in line


def test_stream_cut_midway_is_a_warning(obs_server, upstream):
    """An upstream that stops mid-stream: the client gets error + response.failed, the log a
    warning naming the cause, and the metrics a stream_error."""
    s = obs_server
    before = scrape(s.base)
    upstream.queue(Reply([chunk({"role": "assistant", "content": ""}), chunk({"content": "half"}), b"data: {not json\n\n"]))
    r = create(s, {"model": "obs-a", "input": "hi", "stream": True}, "rid-cut")
    events = checked(parse_sse(r.content))
    assert events[-1]["type"] == "response.failed"
    ln = request_line(s, "rid-cut")
    assert ln["error"] and ln["level"] == "warning"
    warn = [x for x in lines(s) if x.get("request_id") == "rid-cut" and x["logger"] == "respline.gateway"]
    assert warn and warn[0]["level"] == "warning" and "stream failed" in warn[0]["msg"]
    after = scrape(s.base)
    assert delta(before, after, "respline_upstream_requests_total", provider="up", outcome="stream_error") == 1
