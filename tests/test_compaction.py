"""/v1/responses/compact: the upstream summarises, the summary comes back sealed, and a later
request that carries the compaction item sends the summary upstream in place of the history."""

from __future__ import annotations

import json

import httpx
import openai
from openai.types.responses import CompactedResponse

from conftest import TEST_KEY
from upstream import Reply, text_stream

AUTH = {"authorization": f"Bearer {TEST_KEY}"}


def test_compacted_chain_continues_with_the_summary(respline, upstream):
    client = openai.OpenAI(base_url=respline.url, api_key=TEST_KEY, max_retries=0)
    upstream.queue(Reply(text_stream("The answer is 42.")))
    first = client.responses.create(model="m", input="What is the answer? Remember it.")
    upstream.queue(Reply(text_stream("User asked for the answer; it is 42.")))
    r = httpx.post(respline.url + "/responses/compact", json={"model": "m", "previous_response_id": first.id}, headers=AUTH)
    assert r.status_code == 200, r.text
    compacted = CompactedResponse.model_validate(r.json())
    assert compacted.object == "response.compaction"
    item = compacted.output[-1]
    assert item.type == "compaction" and item.encrypted_content
    # sealed, not readable (the summary's words, not "42" alone: random base64 may hold that)
    assert item.encrypted_content.startswith("rsp2.") and "it is 42" not in item.encrypted_content
    # the summary request carried the whole chain and the compaction instruction
    summary_call = upstream.last["body"]["messages"]
    assert summary_call[0] == {"role": "user", "content": "What is the answer? Remember it."}
    assert summary_call[1] == {"role": "assistant", "content": "The answer is 42."}
    assert "summary" in summary_call[-1]["content"].lower()
    # continue from the compacted window: the upstream sees the summary, not the history
    upstream.queue(Reply(text_stream("Still 42.")))
    follow = client.responses.create(
        model="m", input=[item.model_dump(exclude_none=True), {"role": "user", "content": "And now?"}]
    )
    assert follow.output_text == "Still 42."
    assert upstream.last["body"]["messages"] == [
        {"role": "user", "content": "Summary of the conversation so far:\nUser asked for the answer; it is 42."},
        {"role": "user", "content": "And now?"},
    ]


def test_compact_with_input_and_instructions(respline, upstream):
    upstream.queue(Reply(text_stream("short summary")))
    body = {"model": "m", "instructions": "be a pirate", "input": [{"role": "user", "content": "hello"}]}
    r = httpx.post(respline.url + "/responses/compact", json=body, headers=AUTH)
    assert r.status_code == 200
    sent = upstream.last["body"]["messages"]
    assert sent[0]["role"] == "system" and "be a pirate" in sent[0]["content"]
    assert sent[1] == {"role": "user", "content": "hello"}


def test_compact_errors(respline, upstream):
    r = httpx.post(respline.url + "/responses/compact", json={"input": "x"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = httpx.post(respline.url + "/responses/compact", content=b"{nope", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(respline.url + "/responses/compact", json={"model": "m", "previous_response_id": "resp_nope"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "previous_response_not_found"
    upstream.queue(Reply(status=503, body=json.dumps({"error": {"message": "overloaded"}}).encode()))
    r = httpx.post(respline.url + "/responses/compact", json={"model": "m", "input": "x"}, headers=AUTH)
    assert r.status_code == 503 and "overloaded" in r.json()["error"]["message"]
    # a compaction item from elsewhere cannot be opened
    r = httpx.post(
        respline.url + "/responses",
        json={"model": "m", "input": [{"type": "compaction", "encrypted_content": "rsp1.forged"}]},
        headers=AUTH,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0].encrypted_content"
