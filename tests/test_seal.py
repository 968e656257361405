"""Sealed content is bound to its tenant and its kind (engine/seal.py).

Unit tests of the format, then a real respline server with two tenants in front of the scripted
upstream: a reasoning or compaction item that does not open for the caller's tenant and item
type (another tenant's, another server's, tampered, the wrong kind) is a 400
``invalid_encrypted_content`` naming the item, for every upstream kind, and the upstream is sent
nothing; the same tenant's items keep round-tripping.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import httpx
import openai
import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from trio_websocket import open_websocket_url

from conftest import Server
from respline.engine.errors import ApiError
from respline.engine.seal import COMPACTION, PREFIX, REASONING, Sealer, is_sealed, open_items
from respline.engine.wire import request as Q
from upstream import Reply, text_stream, tool_stream
from upstream_formats import anthropic_text, anthropic_tool, responses_text, responses_tool
from validate import checked
from test_websocket import turn, ws_url

# --- the format -----------------------------------------------------------------------------------

S = Sealer("secret-one")


def test_round_trip_for_its_tenant_and_kind():
    token = S.seal_reasoning("t_a", "plan", signature="SIG")
    assert token.startswith(PREFIX) and "plan" not in token
    assert S.open("t_a", REASONING, token) == {"text": "plan", "signature": "SIG"}
    summary = S.seal_summary("t_a", "we did X")
    assert S.open("t_a", COMPACTION, summary) == {"summary": "we did X"}
    assert S.reasoning_sealer("t_a")("x", redacted="D") != S.reasoning_sealer("t_a")("x", redacted="D")  # fresh nonces
    assert S.open("t_a", REASONING, S.reasoning_sealer("t_a")("x", redacted="D")) == {"text": "x", "redacted": "D"}


def test_another_tenant_kind_or_secret_does_not_open():
    token = S.seal_reasoning("t_a", "plan")
    assert S.open("t_b", REASONING, token) is None
    assert S.open("t_a", COMPACTION, token) is None
    assert Sealer("secret-two").open("t_a", REASONING, token) is None
    assert S.open("t_a", REASONING, S.seal_summary("t_a", "s")) is None
    # the associated data is a JSON array: no tenant name can pass for another kind/tenant pair
    assert S.open('a", "b', REASONING, S.seal("a", "b", {"x": 1})) is None


def test_every_changed_character_fails():
    token = S.seal_reasoning("t_a", "a plan of some length")
    body = token[len(PREFIX) :]
    # the last character may carry unused padding bits; every other one is all payload
    for i in range(len(body) - 1):
        swapped = "A" if body[i] != "A" else "B"
        assert S.open("t_a", REASONING, PREFIX + body[:i] + swapped + body[i + 1 :]) is None, i
    for bad in (PREFIX, PREFIX + body[:20], token[:-6], token + "AAAA", PREFIX + "!!!" + body, token + "é", "", None):
        assert S.open("t_a", REASONING, bad) is None
    # the standard alphabet's spelling of the same bytes is another token: refused too
    long = S.seal_reasoning("t_a", "x" * 3000)
    assert "-" in long or "_" in long
    assert S.open("t_a", REASONING, long.replace("-", "+").replace("_", "/")) is None
    assert S.open("t_a", REASONING, long) == {"text": "x" * 3000}


@pytest.mark.parametrize("n", range(8))
def test_every_padding_residue_opens(n):
    text = "é" + "x" * n
    assert S.open("t", REASONING, S.seal_reasoning("t", text)) == {"text": text}


def test_format_recognition():
    for token in ("rsp1.abc", "rsp2.abc", "rsp12.abc", S.seal_summary("t", "s")):
        assert is_sealed(token), token
    for token in ("rspX.abc", "rsp.abc", "rsp2abc", "gAAAAABx", "", None):
        assert not is_sealed(token), token


def test_nonce_source_is_injectable():
    seen = []

    def fixed(aad: bytes, plaintext: bytes) -> bytes:
        seen.append((aad, plaintext))
        return hashlib.sha256(aad + plaintext).digest()[:12]

    det = Sealer("secret-one", nonce=fixed)
    assert det.seal_reasoning("t_a", "same") == det.seal_reasoning("t_a", "same")
    assert det.seal_reasoning("t_a", "same") != det.seal_reasoning("t_b", "same")
    assert seen[0] == (b'["rsp2","reasoning","t_a"]', b'{"text":"same"}')
    assert S.open("t_a", REASONING, det.seal_reasoning("t_a", "same")) == {"text": "same"}  # same key
    with pytest.raises(ValueError):
        Sealer("s", nonce=lambda aad, pt: b"short").seal_summary("t", "x")


def _v1_token(secret: str, payload: dict) -> str:
    """A token as the first format made it (no tenant, no kind)."""
    aead = AESGCM(hashlib.sha256(b"respline-seal:" + secret.encode()).digest())
    nonce = os.urandom(12)
    blob = aead.encrypt(nonce, json.dumps(payload).encode(), b"respline reasoning v1")
    return "rsp1." + base64.urlsafe_b64encode(nonce + blob).decode().rstrip("=")


def test_open_items_checks_each_item_as_its_kind():
    reasoning = S.seal_reasoning("t_a", "plan")
    summary = S.seal_summary("t_a", "sum")
    items = [
        Q.MessageIn(role="user", content="hi"),
        Q.ReasoningIn(encrypted_content=reasoning),
        Q.ReasoningIn(encrypted_content="gAAAA-an-upstream-token"),  # not ours: left alone
        Q.ReasoningIn(),
        Q.CompactionIn(encrypted_content=summary),
        Q.CompactionIn(encrypted_content="upstream-compaction"),
    ]
    opened: dict = {}
    open_items(S, "t_a", items, opened)
    assert opened == {reasoning: {"text": "plan"}, summary: {"summary": "sum"}}

    def refusal(items, tenant="t_a", param="input[{i}].encrypted_content") -> ApiError:
        with pytest.raises(ApiError) as info:
            open_items(S, tenant, items, {}, param)
        return info.value

    err = refusal(items, tenant="t_b")
    assert (err.status, err.code, err.type, err.param) == (400, "invalid_encrypted_content", "invalid_request_error", "input[1].encrypted_content")
    err = refusal([Q.MessageIn(role="user", content="x"), Q.CompactionIn(encrypted_content=reasoning)])
    assert err.param == "input[1].encrypted_content" and "compaction item" in err.message
    err = refusal([Q.ReasoningIn(encrypted_content=summary)], param="previous_response_id")
    assert err.param == "previous_response_id" and "reasoning item" in err.message
    err = refusal([Q.ReasoningIn(encrypted_content=_v1_token("secret-one", {"text": "old"}))])
    assert "earlier version" in err.message


# --- a real server with two tenants ---------------------------------------------------------------

KEY_A = "sk-tenant-a"
KEY_B = "sk-tenant-b"
KEY_C1, KEY_C2 = "sk-team-c-ci", "sk-team-c-laptop"
TOOL = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}
MODELS = ("chat-m", "claude-m", "resp-m")  # one route per upstream kind


def config(upstream_url: str) -> str:
    return f"""
[server]
api_keys = ["{KEY_A}", "{KEY_B}"]

[tenants]
team-c = ["{KEY_C1}", "{KEY_C2}"]

[providers.chat]
kind = "openai-chat"
base_url = "{upstream_url}"

[providers.claude]
kind = "anthropic"
base_url = "{upstream_url}"

[providers.resp]
kind = "openai-responses"
base_url = "{upstream_url}"

[[routes]]
model = "chat-m"
provider = "chat"

[[routes]]
model = "claude-m"
provider = "claude"

[[routes]]
model = "resp-m"
provider = "resp"
"""


@pytest.fixture(scope="module")
def server(upstream_server, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("seal"), [], config=config(upstream_server.base_url))
    yield s
    s.stop()


def post(server, key: str, body: dict, path: str = "/responses") -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def reasoning_turn(server, upstream, key: str, thought: str = "A's private plan") -> list[dict]:
    """A Codex-style store:false turn on the chat route: [reasoning (sealed), function_call]."""
    upstream.queue(Reply(tool_stream("f", "{}", call_id="call_1", reasoning=thought)))
    r = post(server, key, {"model": "chat-m", "input": "go", "tools": [TOOL], "store": False,
                           "include": ["reasoning.encrypted_content"]})
    assert r.status_code == 200, r.text
    output = r.json()["output"]
    assert [o["type"] for o in output] == ["reasoning", "function_call"]
    assert output[0]["encrypted_content"].startswith(PREFIX) and thought not in output[0]["encrypted_content"]
    return output


def compaction_item(server, upstream, key: str, summary: str = "A's private summary") -> dict:
    upstream.queue(Reply(text_stream(summary)))
    r = post(server, key, {"model": "chat-m", "input": "remember this"}, "/responses/compact")
    assert r.status_code == 200, r.text
    item = r.json()["output"][-1]
    assert item["type"] == "compaction" and summary not in item["encrypted_content"]
    return item


def continuation(output: list[dict]) -> list[dict]:
    return [{"role": "user", "content": "go"}, *output, {"type": "function_call_output", "call_id": "call_1", "output": "ok"}]


def assert_refused(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "invalid_encrypted_content", param)
    assert "private" not in err["message"]


def tamper(token: str) -> str:
    at = len(PREFIX) + (len(token) - len(PREFIX)) // 2  # a middle character: all payload bits
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode", ["plain", "stream", "background"])
def test_other_tenant_replaying_a_reasoning_item_is_refused(server, upstream, model, mode):
    output = reasoning_turn(server, upstream, KEY_A)
    upstream.reset()
    body = {"model": model, "input": continuation(output), "tools": [TOOL], "store": mode == "background"}
    if mode != "plain":
        body[mode] = True
    assert_refused(post(server, KEY_B, body), "input[1].encrypted_content")
    assert upstream.requests == []  # nothing of A's, nothing at all, went upstream


@pytest.mark.parametrize("model", MODELS)
def test_other_tenant_replaying_a_compaction_item_is_refused(server, upstream, model):
    item = compaction_item(server, upstream, KEY_A)
    upstream.reset()
    r = post(server, KEY_B, {"model": model, "input": [item, {"role": "user", "content": "what was it?"}]})
    assert_refused(r, "input[0].encrypted_content")
    assert upstream.requests == []
    r = post(server, KEY_B, {"model": model, "input": [item]}, "/responses/compact")  # nor summarised
    assert_refused(r, "input[0].encrypted_content")
    assert upstream.requests == []


@pytest.mark.parametrize("model", MODELS)
def test_a_tampered_byte_is_refused(server, upstream, model):
    output = reasoning_turn(server, upstream, KEY_A)
    item = compaction_item(server, upstream, KEY_A)
    upstream.reset()
    output[0]["encrypted_content"] = tamper(output[0]["encrypted_content"])
    assert_refused(post(server, KEY_A, {"model": model, "input": continuation(output), "tools": [TOOL]}), "input[1].encrypted_content")
    item["encrypted_content"] = tamper(item["encrypted_content"])
    assert_refused(post(server, KEY_A, {"model": model, "input": [{"role": "user", "content": "x"}, item]}), "input[1].encrypted_content")
    assert upstream.requests == []


def test_an_item_sealed_under_another_secret_is_refused(server, upstream, upstream_server, start_server, tmp_path):
    other = start_server(["--upstream", upstream_server.base_url, "--api-key", KEY_A,
                          "--secret-file", str(tmp_path / "another-secret")])
    output = reasoning_turn(other, upstream, KEY_A)
    upstream.queue(Reply(text_stream("their summary")))
    item = post(other, KEY_A, {"model": "chat-m", "input": "x"}, "/responses/compact").json()["output"][-1]
    upstream.reset()
    for model in MODELS:  # the same key, so the same tenant: only the secret differs
        assert_refused(post(server, KEY_A, {"model": model, "input": continuation(output), "tools": [TOOL]}), "input[1].encrypted_content")
        assert_refused(post(server, KEY_A, {"model": model, "input": [item]}), "input[0].encrypted_content")
    assert upstream.requests == []


@pytest.mark.parametrize("model", MODELS)
def test_an_item_presented_as_the_other_kind_is_refused(server, upstream, model):
    output = reasoning_turn(server, upstream, KEY_A)
    item = compaction_item(server, upstream, KEY_A)
    upstream.reset()
    as_compaction = {"type": "compaction", "encrypted_content": output[0]["encrypted_content"]}
    assert_refused(post(server, KEY_A, {"model": model, "input": [as_compaction]}), "input[0].encrypted_content")
    as_reasoning = {"type": "reasoning", "summary": [], "encrypted_content": item["encrypted_content"]}
    body = {"model": model, "input": [{"role": "user", "content": "go"}, as_reasoning, *continuation(output)[2:]], "tools": [TOOL]}
    assert_refused(post(server, KEY_A, body), "input[1].encrypted_content")
    assert upstream.requests == []


def test_a_token_of_the_first_format_is_refused(server, upstream):
    # items sealed before tenant binding (rsp1.) are refused, not dropped (README says so)
    for model in MODELS:
        r = post(server, KEY_A, {"model": model, "input": [{"type": "compaction", "encrypted_content": "rsp1.AAAA"}]})
        assert_refused(r, "input[0].encrypted_content")
        assert "earlier version" in r.json()["error"]["message"]
    assert upstream.requests == []


def test_the_same_tenant_continues_its_chain(server, upstream):
    # Codex-style: store false, the whole context resent with the sealed reasoning
    output = reasoning_turn(server, upstream, KEY_A, thought="Call f first.")
    upstream.queue(Reply(text_stream("Done.")))
    r = post(server, KEY_A, {"model": "chat-m", "input": continuation(output), "tools": [TOOL], "store": False})
    assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"] == "Done."
    assistant = upstream.last["body"]["messages"][1]
    assert assistant["reasoning_content"] == "Call f first." and assistant["tool_calls"][0]["id"] == "call_1"
    # with a compaction item in front, to every upstream kind
    item = compaction_item(server, upstream, KEY_A, summary="We agreed on 42.")
    for model, reply in (("chat-m", text_stream("ok")), ("claude-m", anthropic_text("ok")), ("resp-m", responses_text("ok"))):
        upstream.queue(Reply(reply))
        r = post(server, KEY_A, {"model": model, "input": [item, {"role": "user", "content": "and?"}]})
        assert r.status_code == 200, r.text
        sent = json.dumps(upstream.last["body"])
        assert "Summary of the conversation so far:\\nWe agreed on 42." in sent and "compaction" not in sent


def test_keys_of_one_tenant_share_its_items(server, upstream):
    # bound to the tenant, not to the key: [tenants] keys open each other's items
    output = reasoning_turn(server, upstream, KEY_C1, thought="team plan")
    upstream.queue(Reply(text_stream("ok")))
    assert post(server, KEY_C2, {"model": "chat-m", "input": continuation(output), "tools": [TOOL]}).status_code == 200
    assert upstream.last["body"]["messages"][1]["reasoning_content"] == "team plan"
    upstream.reset()
    assert_refused(post(server, KEY_A, {"model": "chat-m", "input": continuation(output), "tools": [TOOL]}), "input[1].encrypted_content")
    assert upstream.requests == []


def test_anthropic_thinking_is_bound_too(server, upstream):
    upstream.queue(Reply(anthropic_tool("f", "{}", tool_id="call_1", thinking="A thinks.", signature="SIG-A")))
    r = post(server, KEY_A, {"model": "claude-m", "input": "go", "tools": [TOOL], "reasoning": {"effort": "low"}, "store": False})
    output = r.json()["output"]
    assert output[0]["type"] == "reasoning" and "SIG-A" not in output[0]["encrypted_content"]
    upstream.queue(Reply(anthropic_text("fine")))
    body = {"model": "claude-m", "input": continuation(output), "tools": [TOOL], "reasoning": {"effort": "low"}}
    assert post(server, KEY_A, body).status_code == 200
    assert upstream.last["body"]["messages"][1]["content"][0] == {"type": "thinking", "thinking": "A thinks.", "signature": "SIG-A"}
    upstream.reset()
    assert_refused(post(server, KEY_B, body), "input[1].encrypted_content")
    assert upstream.requests == []


def test_a_responses_upstreams_own_reasoning_goes_back_as_it_came(server, upstream):
    # OpenAI's encrypted_content is not respline's: passed through both ways, never wrapped
    upstream.queue(Reply(responses_tool("f", "{}", "call_1", reasoning="gAAAA-openai-own")))
    output = post(server, KEY_A, {"model": "resp-m", "input": "go", "tools": [TOOL]}).json()["output"]
    assert output[0]["encrypted_content"] == "gAAAA-openai-own"
    upstream.queue(Reply(responses_text("ok")))
    assert post(server, KEY_A, {"model": "resp-m", "input": continuation(output), "tools": [TOOL]}).status_code == 200
    forwarded = upstream.last["body"]["input"][1]
    assert forwarded["type"] == "reasoning" and forwarded["encrypted_content"] == "gAAAA-openai-own"


def test_conversation_items_are_checked_when_added(server, upstream):
    output = reasoning_turn(server, upstream, KEY_A)
    r = post(server, KEY_B, {"items": [output[0]]}, "/conversations")
    assert_refused(r, "items[0].encrypted_content")
    conv = post(server, KEY_B, {}, "/conversations").json()["id"]
    r = post(server, KEY_B, {"items": [{"role": "user", "content": "x"}, output[0]]}, f"/conversations/{conv}/items")
    assert_refused(r, "items[1].encrypted_content")
    assert post(server, KEY_A, {"items": [output[0]]}, "/conversations").status_code == 200


def test_sdk_sees_a_bad_request(server, upstream):
    output = reasoning_turn(server, upstream, KEY_A)
    upstream.reset()
    client = openai.OpenAI(base_url=server.url, api_key=KEY_B, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="chat-m", input=continuation(output), tools=[TOOL], stream=True)
    assert info.value.code == "invalid_encrypted_content" and info.value.param == "input[1].encrypted_content"
    assert upstream.requests == []


async def test_websocket_gives_an_error_frame(server, upstream):
    output = await trio.to_thread.run_sync(reasoning_turn, server, upstream, KEY_A)
    upstream.reset()
    async with open_websocket_url(ws_url(server), extra_headers=[("authorization", f"Bearer {KEY_B}")]) as ws:
        for frame in (
            {"model": "chat-m", "input": continuation(output), "tools": [TOOL]},
            {"model": "resp-m", "input": continuation(output), "tools": [TOOL], "generate": False},  # a prewarm too
        ):
            (err,) = await turn(ws, frame)
            assert err["type"] == "error" and err["status"] == 400
            assert (err["error"]["code"], err["error"]["param"]) == ("invalid_encrypted_content", "input[1].encrypted_content")
        assert upstream.requests == []
        upstream.queue(Reply(text_stream("still here")))  # the socket goes on
        events = checked(await turn(ws, {"model": "chat-m", "input": "hi"}))
        assert events[-1]["type"] == "response.completed"


def test_a_stored_chain_sealed_under_a_replaced_secret(upstream, upstream_server, start_server, tmp_path):
    # the secret changed between two runs over one database: the stored reasoning no longer
    # opens, and continuing the chain says so (param: previous_response_id) instead of going on
    # without it
    db = f"sqlite:{tmp_path / 'r.db'}"
    first = start_server(["--upstream", upstream_server.base_url, "--api-key", KEY_A, "--store", db,
                          "--secret-file", str(tmp_path / "secret-1")])
    upstream.queue(Reply(tool_stream("f", "{}", call_id="call_1", reasoning="stored plan")))
    rid = post(first, KEY_A, {"model": "m", "input": "go", "tools": [TOOL], "include": ["reasoning.encrypted_content"]}).json()["id"]
    first.stop()
    second = start_server(["--upstream", upstream_server.base_url, "--api-key", KEY_A, "--store", db,
                           "--secret-file", str(tmp_path / "secret-2")])
    upstream.reset()
    r = post(second, KEY_A, {"model": "m", "previous_response_id": rid, "tools": [TOOL],
                             "input": [{"type": "function_call_output", "call_id": "call_1", "output": "ok"}]})
    assert_refused(r, "previous_response_id")
    assert upstream.requests == []
