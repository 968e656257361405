"""Many providers behind one gateway: routes (exact names and globs, an upstream model name),
fallbacks tried before any byte reached the client, and ``GET /v1/models``."""

from __future__ import annotations

import httpx
import openai
import pytest

from respline.adapters.config import Fallback, RouteConfig, Router
from conftest import TEST_KEY, Server, config_error, free_port, load_config
from upstream import Reply, USAGE, chunk, text_stream
from upstream_formats import anthropic_text
from validate import checked, parse_sse

CONFIG = """
[providers.chat]
kind = "openai-chat"
base_url = "{up}"

[providers.claude]
kind = "anthropic"
base_url = "{up}"
api_key = "sk-ant"
default_max_tokens = 1000

[providers.down]
kind = "openai-chat"
base_url = "http://127.0.0.1:{dead}/v1"
timeouts = {{ connect = 2, first_byte = 10, idle = 10, total = 30 }}

[[routes]]
model = "claude-sonnet"
provider = "claude"
upstream_model = "claude-sonnet-4-5"

[[routes]]
model = "gpt-*"
provider = "chat"
models = ["gpt-a", "gpt-b"]

[[routes]]
model = "local-*"
provider = "chat"
upstream_model = "qwen3"

[[routes]]
model = "fb-503"
provider = "claude"
fallbacks = ["chat"]

[[routes]]
model = "fb-connect"
provider = "down"
fallbacks = [{{ provider = "claude", upstream_model = "claude-backup" }}]

[[routes]]
model = "fb-400"
provider = "claude"
fallbacks = ["chat"]

[[routes]]
model = "fb-midstream"
provider = "chat"
fallbacks = ["claude"]

[[routes]]
model = "*"
provider = "chat"
"""


@pytest.fixture(scope="module")
def routed(upstream_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing")
    server = Server(tmp, ["--api-key", TEST_KEY], config=CONFIG.format(up=upstream_server.base_url, dead=free_port()))
    yield server
    server.stop()


@pytest.fixture
def client(routed):
    return routed.sdk()


def test_exact_route_with_upstream_model(client, upstream):
    upstream.queue(Reply(anthropic_text("from claude")))
    assert client.responses.create(model="claude-sonnet", input="hi").output_text == "from claude"
    assert upstream.last["path"] == "/v1/messages"
    assert upstream.last["body"]["model"] == "claude-sonnet-4-5"


def test_glob_routes(client, upstream):
    upstream.queue(Reply(text_stream("from chat")), Reply(text_stream("local")), Reply(text_stream("anything")))
    resp = client.responses.create(model="gpt-zeta", input="hi")
    assert resp.output_text == "from chat" and resp.model == "gpt-zeta"
    assert (upstream.last["path"], upstream.last["body"]["model"]) == ("/v1/chat/completions", "gpt-zeta")
    client.responses.create(model="local-7b", input="hi")
    assert upstream.last["body"]["model"] == "qwen3"
    client.responses.create(model="whatever", input="hi")  # the catch-all
    assert upstream.last["body"]["model"] == "whatever"


def test_fallback_taken_on_503(client, upstream, routed):
    upstream.queue(
        Reply(status=503, body=b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'),
        Reply(text_stream("fallback answered")),
    )
    with client.responses.stream(model="fb-503", input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.output_text == "fallback answered"
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    assert [r["path"] for r in upstream.requests] == ["/v1/messages", "/v1/chat/completions"]
    assert upstream.requests[1]["body"]["model"] == "fb-503"
    assert "falling back to chat" in routed.log()


def test_fallback_taken_on_connect_error(client, upstream):
    upstream.queue(Reply(anthropic_text("backup")))
    assert client.responses.create(model="fb-connect", input="hi").output_text == "backup"
    assert [(r["path"], r["body"]["model"]) for r in upstream.requests] == [("/v1/messages", "claude-backup")]


def test_fallback_taken_on_429_then_last_error_returned(routed, upstream):
    upstream.queue(
        Reply(status=429, body=b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}'),
        Reply(status=500, body=b'{"error":{"message":"chat broke"}}'),
    )
    r = httpx.post(routed.url + "/responses", json={"model": "fb-503", "input": "hi"},
                   headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=30)
    assert r.status_code == 500 and r.json()["error"]["message"] == "Upstream error: chat broke"
    assert len(upstream.requests) == 2


def test_no_fallback_on_a_client_error(routed, upstream):
    upstream.queue(Reply(status=400, body=b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}'))
    r = httpx.post(routed.url + "/responses", json={"model": "fb-400", "input": "hi"},
                   headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=30)
    assert r.status_code == 400
    assert len(upstream.requests) == 1


def test_no_retry_once_streaming_began(routed, upstream):
    upstream.queue(Reply([chunk({"role": "assistant", "content": "partial"})]))  # then EOF: a cut stream
    r = httpx.post(routed.url + "/responses", json={"model": "fb-midstream", "input": "hi", "stream": True},
                   headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=30)
    events = parse_sse(r.content)
    checked(events)
    assert events[-1]["type"] == "response.failed"
    assert len(upstream.requests) == 1


def test_models_endpoint(routed):
    r = httpx.get(routed.url + "/models", headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    listed = [(m["id"], m["owned_by"]) for m in body["data"]]
    assert listed == [
        ("claude-sonnet", "claude"), ("gpt-a", "chat"), ("gpt-b", "chat"), ("local-*", "chat"),
        ("fb-503", "claude"), ("fb-connect", "down"), ("fb-400", "claude"), ("fb-midstream", "chat"),
    ]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
    openai_client = openai.OpenAI(base_url=routed.url, api_key=TEST_KEY, max_retries=0)
    assert [m.id for m in openai_client.models.list()] == [m for m, _ in listed]


# --- the router and the config, without a server ----------------------------------------------------


def test_router_resolution():
    routes = [
        RouteConfig(model="a-*", provider="p1", fallbacks=["p2", Fallback(provider="p3", upstream_model="m3")]),
        RouteConfig(model="a-exact", provider="p2", upstream_model="up"),
        RouteConfig(model="a*", provider="p4"),
    ]
    router = Router(routes)
    assert router.resolve("a-exact").attempts == (("p2", "up"),)  # exact beats an earlier glob
    route = router.resolve("a-x")
    assert route.attempts == (("p1", "a-x"), ("p2", "a-x"), ("p3", "m3"))
    assert router.resolve("ab").provider == "p4"
    assert router.resolve("b") is None
    routes.append(RouteConfig(model="a-*", provider="p9", models=["a-exact", "a-one"]))
    assert Router(routes).listed(routes) == [("a-*", "p1"), ("a-exact", "p2"), ("a*", "p4"), ("a-one", "p1")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[providers.a]\nkind = "anthropic"\nbase_url = "x"\n[[routes]]\nmodel = "m"\nprovider = "a"\nfallbacks = ["nope"]\n',
         "routes[0].fallbacks[0]: no provider named 'nope'"),
        ('[providers.a]\nkind = "bard"\nbase_url = "x"\n', "providers.a.kind: 'bard' is not one of"),
        ('[providers.a]\nkind = "anthropic"\nbase_url = "x"\nthinking_budgets = { low = 500 }\n', "thinking_budgets.low: 500"),
        ('[providers.a]\nkind = "openai-chat"\nbase_url = "x"\n[[routes]]\nmodel = "g-*"\nprovider = "a"\nmodels = ["h"]\n',
         "routes[0].models: 'h' does not match 'g-*'"),
        ('[providers.a]\nkind = "openai-responses"\nbase_url = "x"\ndrop_fields = "include"\n', "Expected `array`"),
    ],
)
def test_config_errors(tmp_path, text, message):
    assert message in config_error(tmp_path, text)


def test_provider_options_load(tmp_path):
    cfg = load_config(
        tmp_path,
        '[providers.a]\nkind = "anthropic"\nbase_url = "https://api.anthropic.com/v1"\nanthropic_version = "2023-06-01"\n'
        'default_max_tokens = 4096\nthinking_budgets = { high = 20000, minimal = 0 }\nheaders = { anthropic-beta = "x" }\n'
        '[providers.r]\nkind = "openai-responses"\nbase_url = "https://example.invalid/v1"\ndrop_fields = ["include", "reasoning.summary"]\n'
        'path = "/responses?api-version=preview"\n',
    )
    dialect = cfg.providers["a"].anthropic_dialect()
    assert dialect.default_max_tokens == 4096
    assert dialect.thinking_budgets["high"] == 20000 and dialect.thinking_budgets["minimal"] == 0
    assert dialect.thinking_budgets["medium"] == 8192  # defaults kept under the overrides
    assert cfg.providers["r"].drop_fields == ["include", "reasoning.summary"]
