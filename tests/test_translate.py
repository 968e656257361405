"""Request side: a Responses create body -> the Chat Completions body an upstream gets (SPEC 2, 6.2).

Pure unit tests of engine/translate.py: no server, no upstream. ``chat(body)`` runs the same
steps the gateway does (parse_create -> input_items -> to_chat_request).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from respline.engine.errors import ApiError
from respline.engine.ids import deterministic
from respline.engine.seal import Sealer
import sealing
from respline.engine.toolmap import ToolTarget
from respline.engine.translate import (
    DEFAULT_DIALECT,
    ChatDialect,
    input_items,
    parse_create,
    response_builtins,
    response_template,
    to_chat_request,
)
from validate import OPENAI_RESPONSE, validate_response

SEALER = sealing.SEALER


def parse(body: dict[str, Any]):
    return parse_create(json.dumps(body).encode())


def chat(
    body: dict[str, Any],
    dialect: ChatDialect = DEFAULT_DIALECT,
    unseal=sealing.unseal,
    stream: bool = True,
) -> tuple[dict[str, Any], dict[str, ToolTarget]]:
    req = parse({"model": "m1", **body})
    return to_chat_request(req, input_items(req), "up-model", dialect, unseal, stream=stream)


def messages(body: dict[str, Any], **kw) -> list[dict[str, Any]]:
    return chat(body, **kw)[0]["messages"]


def api_error(body: dict[str, Any] | bytes, **kw) -> ApiError:
    """The ApiError that parsing + translating ``body`` raises (bytes are sent verbatim)."""
    with pytest.raises(ApiError) as info:
        if isinstance(body, bytes):
            req = parse_create(body)
            to_chat_request(req, input_items(req), "up-model", **kw)
        else:
            chat(body, **kw)
    return info.value


def fn(name: str, **extra) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}, **extra}


def nested(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


# --- input: string, messages, parts ---------------------------------------------------------


def test_input_string_is_one_user_message():
    body, tmap = chat({"input": "Hi there"})
    assert body["model"] == "up-model"
    assert body["messages"] == [{"role": "user", "content": "Hi there"}]
    assert tmap == {}
    assert "tools" not in body and "tool_choice" not in body


def test_easy_and_typed_messages_keep_order_and_ignore_ids_status_phase():
    items = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"type": "message", "role": "user", "id": "msg_u", "status": "completed", "content": "three"},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_a",
            "status": "completed",
            "phase": "final_answer",
            "content": [{"type": "output_text", "text": "four", "annotations": [], "logprobs": []}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "five"}]},
    ]
    assert messages({"input": items}) == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "five"},
    ]


def test_type_null_message_and_unknown_item_keys_are_accepted():
    items = [{"type": None, "role": "user", "content": "hi", "some_new_field": 1}]
    assert messages({"input": items}) == [{"role": "user", "content": "hi"}]


def test_user_text_parts_collapse_to_one_string():
    parts = [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]
    assert messages({"input": [{"role": "user", "content": parts}]}) == [{"role": "user", "content": "a\nb"}]


def test_user_image_and_file_parts():
    data_url = "data:image/png;base64,iVBORw0KGgo="
    parts = [
        {"type": "input_text", "text": "What is in these?"},
        {"type": "input_image", "image_url": "https://example.com/cat.png"},
        {"type": "input_image", "image_url": data_url, "detail": "low"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
        {"type": "input_file", "file_url": "https://example.com/b.pdf"},
    ]
    assert messages({"input": [{"type": "message", "role": "user", "content": parts}]}) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
                {"type": "file", "file": {"file_data": "https://example.com/b.pdf"}},
            ],
        }
    ]


def test_image_without_url_and_unknown_part_type_are_400():
    err = api_error({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]})
    assert (err.status, err.param) == (400, "input[0].content[0].image_url")
    err = api_error({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_video"}]}]})
    assert (err.status, err.param) == (400, "input[0].content[1].type")


def test_assistant_output_text_and_refusal_parts():
    content = [
        {"type": "output_text", "text": "I can't ", "annotations": []},
        {"type": "refusal", "refusal": "help with that."},
    ]
    items = [{"role": "user", "content": "q"}, {"type": "message", "role": "assistant", "content": content}]
    assert messages({"input": items})[1] == {"role": "assistant", "content": "I can't help with that."}


def test_consecutive_assistant_messages_merge_without_gluing_words():
    items = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Let me check.", "phase": "commentary"},
        {"role": "assistant", "content": "Done.", "phase": "final_answer"},
    ]
    assert messages({"input": items})[1] == {"role": "assistant", "content": "Let me check.\n\nDone."}


# --- system / developer / instructions --------------------------------------------------------


def test_instructions_and_every_system_developer_message_become_one_leading_system_message():
    items = [
        {"role": "user", "content": "u1"},
        {"role": "developer", "content": "dev1"},
        {"role": "assistant", "content": "a1"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys2"}]},
        {"role": "user", "content": "u2"},
        {"role": "developer", "content": [{"type": "input_text", "text": "p1"}, {"type": "input_text", "text": "p2"}]},
    ]
    assert messages({"instructions": "inst", "input": items}) == [
        {"role": "system", "content": "inst\n\ndev1\n\nsys2\n\np1\np2"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]


def test_instructions_alone_and_no_system_without_any():
    assert messages({"instructions": "be brief", "input": "hi"}) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert all(m["role"] != "system" for m in messages({"input": "hi"}))


# --- function calls -------------------------------------------------------------------------


def test_consecutive_function_calls_become_one_assistant_message_after_its_text():
    items = [
        {"role": "user", "content": "weather in SF and NYC?"},
        {"type": "message", "role": "assistant", "id": "msg_1", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"SF"}', "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "get_weather", "arguments": '{"city":"NYC"}'},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": '{"temp":17}'},
        {"type": "function_call_output", "call_id": "call_2", "output": [
            {"type": "input_text", "text": "temp"},
            {"type": "input_text", "text": "21"},
        ]},
        {"role": "assistant", "content": "SF 17, NYC 21."},
    ]
    assert messages({"input": items, "tools": [fn("get_weather")]}) == [
        {"role": "user", "content": "weather in SF and NYC?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"SF"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"NYC"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":17}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "temp\n21"},
        {"role": "assistant", "content": "SF 17, NYC 21."},
    ]


def test_function_call_without_text_has_null_content_and_empty_arguments_become_braces():
    items = [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ]
    msgs = messages({"input": items})
    assert msgs[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


def test_text_after_tool_calls_starts_a_new_assistant_message():
    items = [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"role": "assistant", "content": "after"},
    ]
    msgs = messages({"input": items})
    assert [m["content"] for m in msgs] == [None, "after"]
    assert "tool_calls" in msgs[0] and "tool_calls" not in msgs[1]


# --- reasoning ------------------------------------------------------------------------------


def _calls(call_id: str = "c1") -> list[dict[str, Any]]:
    return [
        {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call_id, "output": "ok"},
    ]


def test_sealed_reasoning_goes_back_on_the_following_tool_call_turn():
    items = [
        {"role": "user", "content": "q"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "summary"}],
            "content": None,  # Codex sends content: null
            "encrypted_content": sealing.seal_reasoning("sealed thoughts"),
        },
        *_calls(),
    ]
    msgs = messages({"input": items})
    assert msgs[1]["reasoning_content"] == "sealed thoughts"
    assert msgs[1]["tool_calls"][0]["id"] == "c1"
    assert msgs[2] == {"role": "tool", "tool_call_id": "c1", "content": "ok"}


def test_reasoning_falls_back_to_plain_content_then_summary():
    def first_reasoning(item: dict[str, Any]) -> str | None:
        msgs = messages({"input": [item, {"role": "assistant", "content": "answer"}]})
        assert msgs[-1]["content"] == "answer"
        return msgs[-1].get("reasoning_content")

    content = [{"type": "reasoning_text", "text": "raw"}]
    summary = [{"type": "summary_text", "text": "**A**"}, {"type": "summary_text", "text": "**B**"}]
    assert first_reasoning({"type": "reasoning", "summary": summary, "content": content}) == "raw"
    assert first_reasoning({"type": "reasoning", "summary": summary}) == "**A**\n\n**B**"
    assert first_reasoning({"type": "reasoning", "summary": summary, "content": None}) == "**A**\n\n**B**"
    assert first_reasoning({"type": "reasoning", "summary": []}) is None


@pytest.mark.parametrize("n", range(8))
def test_sealed_reasoning_of_any_length_opens(n):
    # the token's base64 padding depends on the payload length: every residue must round-trip
    text = "é" + "x" * n
    items = [{"type": "reasoning", "summary": [], "encrypted_content": sealing.seal_reasoning(text)}, *_calls()]
    assert messages({"input": items})[0].get("reasoning_content") == (text or None)


def test_sealed_reasoning_that_does_not_open_is_refused_not_skipped():
    other = Sealer("another-deployment").seal_reasoning(sealing.TENANT, "theirs")
    foreign_tenant = SEALER.seal_reasoning("tenant:other", "theirs")
    token = sealing.seal_reasoning("ours")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    summary = [{"type": "summary_text", "text": "fallback"}]
    for enc in (other, foreign_tenant, tampered, "rsp1.an-old-token"):
        items = [{"role": "user", "content": "q"}, {"type": "reasoning", "summary": summary, "encrypted_content": enc}, *_calls()]
        err = api_error({"input": items})
        assert (err.status, err.code, err.type) == (400, "invalid_encrypted_content", "invalid_request_error"), enc
        assert err.param == "input[1].encrypted_content"
    # without a lookup (no tokens were opened for this request) a sealed token is refused too
    items = [{"type": "reasoning", "summary": summary, "encrypted_content": token}, *_calls()]
    assert api_error({"input": items}, unseal=None).param == "input[0].encrypted_content"


def test_encrypted_content_not_in_our_format_is_not_ours_to_open():
    # an OpenAI upstream's own encrypted_content (a route that changed provider kind): the
    # reasoning goes back from its plain summary, as before
    summary = [{"type": "summary_text", "text": "fallback"}]
    for enc in ("gAAAAABopenai-opaque-blob", "", "rspX.not-ours"):
        items = [{"type": "reasoning", "summary": summary, "content": None, "encrypted_content": enc}, *_calls()]
        assert messages({"input": items})[0]["reasoning_content"] == "fallback", enc


def test_reasoning_attaches_to_the_following_assistant_message_only():
    items = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "r2"}]},
        *_calls("c2"),
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "r3"}]},
        {"role": "assistant", "content": "a3"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "dangling"}]},
        {"role": "user", "content": "q4"},
    ]
    msgs = messages({"input": items})
    assert [(m["role"], m.get("reasoning_content")) for m in msgs] == [
        ("user", None),
        ("assistant", None),
        ("assistant", "r2"),
        ("tool", None),
        ("assistant", "r3"),
        ("user", None),
    ]
    # reasoning after text closes that assistant turn
    assert msgs[1] == {"role": "assistant", "content": "a1"}


def test_reasoning_dialect_field_name_and_send_back_switch():
    items = [{"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "r"}]}, *_calls()]
    msg = messages({"input": items}, dialect=ChatDialect(reasoning_field="reasoning"))[0]
    assert msg["reasoning"] == "r" and "reasoning_content" not in msg
    msg = messages({"input": items}, dialect=ChatDialect(send_reasoning_back=False))[0]
    assert "reasoning_content" not in msg and "reasoning" not in msg
    assert msg["tool_calls"][0]["id"] == "c1"


# --- custom tools (Codex apply_patch) ---------------------------------------------------------


def test_custom_tool_call_round_trip_is_a_json_wrapped_function_call():
    patch = '*** Begin Patch\n*** Add File: a.txt\n+hé "quoted"\n*** End Patch\n'
    items = [
        {"role": "user", "content": "add a file"},
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_p", "name": "apply_patch", "input": patch, "status": "completed"},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Success. Updated: A a.txt"},
    ]
    msgs = messages({"input": items})
    call = msgs[1]["tool_calls"][0]
    assert call["id"] == "call_p" and call["function"]["name"] == "apply_patch"
    assert json.loads(call["function"]["arguments"]) == {"input": patch}
    assert msgs[2] == {"role": "tool", "tool_call_id": "call_p", "content": "Success. Updated: A a.txt"}


# --- tools ----------------------------------------------------------------------------------


def test_function_tool_flat_to_nested():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [
        {"type": "function", "name": "get_weather", "description": "Weather.", "parameters": schema, "strict": True},
        {"type": "function", "name": "no_params"},
        {"type": "function", "name": "nulls", "description": None, "parameters": None, "strict": None},
    ]
    body, tmap = chat({"input": "x", "tools": tools})
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": schema, "strict": True}},
        nested("no_params"),
        nested("nulls"),
    ]
    assert tmap == {
        "get_weather": ToolTarget("function", "get_weather"),
        "no_params": ToolTarget("function", "no_params"),
        "nulls": ToolTarget("function", "nulls"),
    }


def test_custom_tool_becomes_function_with_one_string_input_carrying_the_grammar():
    grammar = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF'
    tools = [
        {"type": "custom", "name": "apply_patch", "description": "Edit files.",
         "format": {"type": "grammar", "syntax": "lark", "definition": grammar}},
        {"type": "custom", "name": "free", "format": {"type": "text"}},
    ]
    body, tmap = chat({"input": "x", "tools": tools})
    patch_fn = body["tools"][0]["function"]
    assert patch_fn["name"] == "apply_patch" and patch_fn["description"] == "Edit files."
    params = patch_fn["parameters"]
    assert params["type"] == "object" and params["required"] == ["input"]
    assert list(params["properties"]) == ["input"]
    assert params["properties"]["input"]["type"] == "string"
    assert "lark" in params["properties"]["input"]["description"]
    assert grammar in params["properties"]["input"]["description"]
    free = body["tools"][1]["function"]
    assert free["parameters"]["properties"]["input"]["type"] == "string"
    assert "description" not in free
    assert tmap == {"apply_patch": ToolTarget("custom", "apply_patch"), "free": ToolTarget("custom", "free")}


def test_namespace_tools_are_offered_joined_and_mapped_back():
    ns = {
        "type": "namespace",
        "name": "mcp__files",
        "description": "File server",
        "tools": [fn("list", description="List files."), {"type": "custom", "name": "write"}],
    }
    body, tmap = chat({"input": "x", "tools": [fn("top"), ns]})
    assert [t["function"]["name"] for t in body["tools"]] == ["top", "mcp__files__list", "mcp__files__write"]
    assert body["tools"][1]["function"]["description"] == "List files."
    assert tmap["mcp__files__list"] == ToolTarget("function", "list", "mcp__files")
    assert tmap["mcp__files__write"] == ToolTarget("custom", "write", "mcp__files")
    # a namespaced call in the history goes back under the same joined name
    items = [{"type": "function_call", "call_id": "c", "name": "list", "namespace": "mcp__files", "arguments": "{}"}]
    msgs = messages({"input": items, "tools": [ns]})
    assert msgs[0]["tool_calls"][0]["function"]["name"] == "mcp__files__list"


def test_hosted_tools_are_left_out_without_error():
    # the translation leaves out what it cannot offer; the route's hosted_tools policy and the
    # unknown-type 400 come before it (engine/tool_policy.py, tests/test_fields.py)
    hosted = [
        {"type": "web_search"},
        {"type": "web_search_preview", "search_context_size": "low"},
        {"type": "tool_search"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "image_generation"},
        {"type": "mcp", "server_label": "x", "server_url": "https://x"},
        {"type": "local_shell"},
        {"type": "some_future_tool"},
    ]
    body, tmap = chat({"input": "x", "tools": [*hosted, fn("f")], "tool_choice": "required", "parallel_tool_calls": False})
    assert body["tools"] == [nested("f")]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert tmap == {"f": ToolTarget("function", "f")}
    # only hosted tools: nothing tool-related goes upstream at all
    body, tmap = chat({"input": "x", "tools": hosted, "tool_choice": "auto", "parallel_tool_calls": True})
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(body) and tmap == {}


def test_tool_errors_name_the_field():
    err = api_error({"input": "x", "tools": [fn("ok"), {"type": "function", "parameters": {}}]})
    assert (err.status, err.param, err.code) == (400, "tools[1].name", "missing_required_parameter")
    err = api_error({"input": "x", "tools": [{"type": "custom", "name": ""}]})
    assert (err.status, err.param) == (400, "tools[0].name")
    err = api_error({"input": "x", "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "function"}]}]})
    assert (err.status, err.param) == (400, "tools[0].tools[0].name")
    err = api_error({"input": "x", "tools": [{"name": "untyped"}]})
    assert (err.status, err.param) == (400, "tools[0].type")
    err = api_error({"input": "x", "tools": ["get_weather"]})
    assert (err.status, err.param) == (400, "tools[0]")


# --- tool_choice ----------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_strings_pass_through(choice):
    body, _ = chat({"input": "x", "tools": [fn("f")], "tool_choice": choice})
    assert body["tool_choice"] == choice


def test_tool_choice_absent_is_not_sent():
    body, _ = chat({"input": "x", "tools": [fn("f")]})
    assert "tool_choice" not in body and "parallel_tool_calls" not in body


def test_tool_choice_named_function_custom_and_namespaced():
    tools = [fn("f"), {"type": "custom", "name": "apply_patch"}, {"type": "namespace", "name": "ns", "tools": [fn("g")]}]
    cases = [
        ({"type": "function", "name": "f"}, "f"),
        ({"type": "custom", "name": "apply_patch"}, "apply_patch"),
        ({"type": "function", "name": "g", "namespace": "ns"}, "ns__g"),
    ]
    for choice, name in cases:
        body, _ = chat({"input": "x", "tools": tools, "tool_choice": choice})
        assert body["tool_choice"] == {"type": "function", "function": {"name": name}}
        assert len(body["tools"]) == 3


def test_tool_choice_naming_a_missing_tool_is_400():
    err = api_error({"input": "x", "tools": [fn("f")], "tool_choice": {"type": "function", "name": "nope"}})
    assert (err.status, err.param) == (400, "tool_choice")
    err = api_error({"input": "x", "tool_choice": {"type": "custom", "name": "apply_patch"}})
    assert (err.status, err.param) == (400, "tool_choice")
    err = api_error({"input": "x", "tools": [fn("f")], "tool_choice": {"type": "function"}})
    assert (err.status, err.param) == (400, "tool_choice.name")
    err = api_error({"input": "x", "tools": [fn("f")], "tool_choice": "sometimes"})
    assert (err.status, err.param) == (400, "tool_choice")


def test_allowed_tools_narrows_the_tool_list_and_mode_becomes_tool_choice():
    tools = [fn("a"), fn("b"), {"type": "custom", "name": "c"}, {"type": "web_search"}]
    choice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "b"}, {"type": "custom", "name": "c"}, {"type": "web_search"}],
    }
    body, tmap = chat({"input": "x", "tools": tools, "tool_choice": choice, "parallel_tool_calls": True})
    assert [t["function"]["name"] for t in body["tools"]] == ["b", "c"]
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is True
    body, _ = chat({"input": "x", "tools": tools, "tool_choice": {**choice, "mode": "auto"}})
    assert body["tool_choice"] == "auto"
    err = api_error({"input": "x", "tools": tools, "tool_choice": {**choice, "mode": "sometimes"}})
    assert (err.status, err.param) == (400, "tool_choice.mode")


def test_parallel_tool_calls_only_with_tools_and_when_the_dialect_supports_it():
    body, _ = chat({"input": "x", "parallel_tool_calls": False})
    assert "parallel_tool_calls" not in body
    body, _ = chat({"input": "x", "tools": [fn("f")], "parallel_tool_calls": False})
    assert body["parallel_tool_calls"] is False
    body, _ = chat(
        {"input": "x", "tools": [fn("f")], "parallel_tool_calls": False},
        dialect=ChatDialect(supports_parallel_tool_calls=False),
    )
    assert "parallel_tool_calls" not in body


# --- sampling, format, reasoning, streaming ---------------------------------------------------


def test_sampling_parameters_and_max_tokens_name():
    settings = {
        "input": "x",
        "max_output_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "stop": ["\n\n", "END"],
    }
    body, _ = chat(settings)
    assert body["max_tokens"] == 256 and "max_completion_tokens" not in body
    assert (body["temperature"], body["top_p"]) == (0.2, 0.9)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, -0.5)
    assert body["stop"] == ["\n\n", "END"]
    body, _ = chat(settings, dialect=ChatDialect(max_tokens_param="max_completion_tokens"))
    assert body["max_completion_tokens"] == 256 and "max_tokens" not in body
    body, _ = chat({"input": "x", "temperature": 0, "top_p": 0})
    assert (body["temperature"], body["top_p"]) == (0, 0)  # zero is a value, not "unset"
    body, _ = chat({"input": "x"})
    assert not {"max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty", "stop"} & set(body)


def test_text_format_json_schema_and_json_object():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    fmt = {"type": "json_schema", "name": "count", "schema": schema, "strict": True, "description": "A count."}
    body, _ = chat({"input": "x", "text": {"format": fmt, "verbosity": "low"}})
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "count", "schema": schema, "strict": True, "description": "A count."},
    }
    assert "verbosity" not in body
    body, _ = chat({"input": "x", "text": {"format": {"type": "json_schema", "schema": schema}}})
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    body, _ = chat({"input": "x", "text": {"format": {"type": "json_object"}}})
    assert body["response_format"] == {"type": "json_object"}
    body, _ = chat({"input": "x", "text": {"format": {"type": "text"}}})
    assert "response_format" not in body
    err = api_error({"input": "x", "text": {"format": {"type": "yaml"}}})
    assert (err.status, err.param) == (400, "text.format.type")


def test_reasoning_effort_with_effort_map_and_none_omitted():
    body, _ = chat({"input": "x", "reasoning": {"effort": "high", "summary": "auto"}})
    assert body["reasoning_effort"] == "high"
    mapped = ChatDialect(effort_map={"xhigh": "high", "minimal": "low"})
    assert chat({"input": "x", "reasoning": {"effort": "xhigh"}}, dialect=mapped)[0]["reasoning_effort"] == "high"
    assert chat({"input": "x", "reasoning": {"effort": "medium"}}, dialect=mapped)[0]["reasoning_effort"] == "medium"
    for reasoning in ({"effort": "none"}, {"summary": "auto"}, None):
        body, _ = chat({"input": "x", "reasoning": reasoning})
        assert "reasoning_effort" not in body, reasoning
    body, _ = chat({"input": "x", "reasoning": {"effort": "low"}}, dialect=ChatDialect(reasoning_effort_param=None))
    assert "reasoning_effort" not in body
    body, _ = chat({"input": "x", "reasoning": {"effort": "low"}}, dialect=ChatDialect(reasoning_effort_param="effort"))
    assert body["effort"] == "low" and "reasoning_effort" not in body


def test_stream_always_asks_for_usage_and_non_stream_sends_neither():
    body, _ = chat({"input": "x", "stream": True, "stream_options": {"include_obfuscation": False}})
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    body, _ = chat({"input": "x"}, stream=False)
    assert "stream" not in body and "stream_options" not in body


def test_accepted_and_ignored_fields_do_not_leak_upstream():
    ignored = {
        "store": False,
        "include": ["reasoning.encrypted_content", "message.output_text.logprobs"],
        "metadata": {"k": "v"},
        "prompt_cache_key": "pck",
        "safety_identifier": "sid",
        "prompt_cache_retention": "24h",
        "client_metadata": {"x-codex-turn": "1"},
        "service_tier": "flex",
        "truncation": "auto",
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_obfuscation": False},
        "background": False,
        "max_tool_calls": 5,
        "top_logprobs": 3,
        "previous_response_id": "resp_prev",
        "prompt": {"id": "pmpt_1"},
        "context_management": [{"type": "compaction"}],
        "generate": True,
        "type": "response.create",
        "brand_new_field": {"nested": True},
        "text": {"verbosity": "high"},
    }
    body, tmap = chat({"input": "hello", **ignored})
    assert body == {
        "model": "up-model",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert tmap == {}


# --- parse_create errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, param",
    [
        (b"", None),
        (b"   \n", None),
        (b"{not json", None),
        (b'{"model": "m1", "input": "x",}', None),
        (b"[]", None),
        (b'"just a string"', None),
    ],
)
def test_malformed_or_empty_body_is_400(raw, param):
    err = api_error(raw)
    assert err.status == 400 and err.param == param
    assert err.type == "invalid_request_error" and err.message


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": "x"}, "model"),
        ({"model": "", "input": "x"}, "model"),
        ({"model": 5, "input": "x"}, "model"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": "x", "instructions": ["a"]}, "instructions"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "x", "temperature": True}, "temperature"),
        ({"model": "m", "input": "x", "max_output_tokens": 1.5}, "max_output_tokens"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "x", "tools": {"type": "function"}}, "tools"),
        ({"model": "m", "input": "x", "tool_choice": 1}, "tool_choice"),
        ({"model": "m", "input": "x", "text": {"format": "json"}}, "text.format"),
        ({"model": "m", "input": "x", "text": "json"}, "text"),
        ({"model": "m", "input": "x", "reasoning": {"effort": 3}}, "reasoning.effort"),
        ({"model": "m", "input": "x", "include": "reasoning.encrypted_content"}, "include"),
        ({"model": "m", "input": "x", "store": "no"}, "store"),
        ({"model": "m", "input": [1]}, "input[0]"),
        ({"model": "m", "input": [{"type": "bogus"}]}, "input[0].type"),
        ({"model": "m", "input": [{"content": "no role"}]}, "input[0].type"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": None}]}, "input[0].content"),
        ({"model": "m", "input": [{"type": "message", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        (
            {"model": "m", "input": [
                {"role": "user", "content": "x"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": 7, "output": "x"},
            ]},
            "input[2].call_id",
        ),
        ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": 3}]}, "input[0].output"),
        ({"model": "m", "input": [{"type": "custom_tool_call", "call_id": "c", "name": "p"}]}, "input[0].input"),
        ({"model": "m", "input": [{"type": "reasoning", "summary": "text"}]}, "input[0].summary"),
        ({"model": "m", "input": [{"type": "reasoning", "summary": [], "content": [1]}]}, "input[0].content[0]"),
    ],
)
def test_wrong_types_name_the_field(body, param):
    err = api_error(json.dumps(body).encode())  # verbatim: no default model added
    assert err.status == 400, err.message
    assert err.param == param, err.message
    assert err.type == "invalid_request_error"


def test_missing_item_field_message_and_code():
    err = api_error({"input": [{"type": "function_call_output", "output": "x"}]})
    assert err.param == "input[0].call_id" and err.code == "missing_required_parameter"
    assert "call_id" in err.message


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("top_p", 1.01),
        ("top_p", -1),
        ("max_output_tokens", 0),
        ("top_logprobs", 21),
        ("top_logprobs", -1),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
        ("truncation", "sometimes"),
        ("metadata", {f"k{i}": "v" for i in range(17)}),
    ],
)
def test_range_checks(field, value):
    err = api_error({"input": "x", field: value})
    assert (err.status, err.param, err.code) == (400, field, "invalid_value")


@pytest.mark.parametrize(
    "field, value",
    [("temperature", 0), ("temperature", 2), ("top_p", 1), ("max_output_tokens", 1), ("top_logprobs", 20),
     ("presence_penalty", -2), ("frequency_penalty", 2), ("truncation", "disabled"),
     ("metadata", {f"k{i}": "v" for i in range(16)})],
)
def test_range_edges_are_accepted(field, value):
    chat({"input": "x", field: value})


def test_conversation_and_previous_response_id_together_is_400():
    err = api_error({"input": "x", "conversation": "conv_1", "previous_response_id": "resp_1"})
    assert (err.status, err.param) == (400, "previous_response_id")
    parse({"model": "m", "input": "x", "conversation": {"id": "conv_1"}})
    parse({"model": "m", "input": "x", "previous_response_id": "resp_1"})


def test_item_reference_is_not_found_and_compaction_needs_our_seal():
    err = api_error({"input": [{"type": "item_reference", "id": "msg_1"}]})
    assert (err.status, err.param, err.code) == (404, "input[0].id", "item_not_found")
    err = api_error({"input": [{"id": "msg_2"}]})  # type omitted: a reference
    assert (err.status, err.param) == (404, "input[0].id")
    err = api_error({"input": [{"type": "compaction", "encrypted_content": "foreign"}]})
    assert (err.status, err.param) == (400, "input[0].encrypted_content")
    token = SEALER.seal_summary(sealing.TENANT, "earlier we did X")
    items = [{"type": "compaction", "id": "cmp_1", "encrypted_content": token}, {"role": "user", "content": "next"}]
    assert messages({"input": items}) == [
        {"role": "user", "content": "Summary of the conversation so far:\nearlier we did X"},
        {"role": "user", "content": "next"},
    ]


# --- response_template --------------------------------------------------------------------------


OPEN_RESPONSES_KEYS = {
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
    "previous_response_id", "instructions", "output", "error", "tools", "tool_choice",
    "truncation", "parallel_tool_calls", "text", "top_p", "presence_penalty", "frequency_penalty",
    "top_logprobs", "temperature", "reasoning", "usage", "max_output_tokens", "max_tool_calls",
    "store", "background", "service_tier", "metadata", "safety_identifier", "prompt_cache_key",
}  # fmt: skip


def template_dict(body: dict[str, Any], **kw) -> dict[str, Any]:
    ids, clock = deterministic()
    tpl = response_template(parse({"model": "m1", "input": "x", **body}), ids, clock, **kw)
    tpl.status = "completed"
    tpl.completed_at = clock.now()
    return response_builtins(tpl)


def test_template_defaults_have_every_key_and_validate():
    d = template_dict({})
    assert OPEN_RESPONSES_KEYS <= set(d)
    assert d["id"].startswith("resp_") and d["object"] == "response" and d["model"] == "m1"
    assert d["created_at"] == 1_700_000_000
    assert d["output"] == [] and d["tools"] == [] and d["tool_choice"] == "auto"
    assert d["text"] == {"format": {"type": "text"}}
    assert (d["temperature"], d["top_p"], d["store"], d["parallel_tool_calls"]) == (1.0, 1.0, True, True)
    assert (d["truncation"], d["service_tier"], d["metadata"], d["background"]) == ("disabled", "default", {}, False)
    validate_response(d)


def test_template_echoes_the_request_settings_and_validates():
    tool = fn("get_weather", description="Weather.", strict=True)
    body = {
        "instructions": "be brief",
        "previous_response_id": "resp_prev",
        "tools": [tool],
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]},
        "parallel_tool_calls": False,
        "truncation": "auto",
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "temperature": 0.3,
        "top_p": 0.8,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "top_logprobs": 4,
        "reasoning": {"effort": "high", "summary": "auto"},
        "max_output_tokens": 500,
        "max_tool_calls": 3,
        "store": False,
        "background": False,
        "service_tier": "flex",
        "metadata": {"team": "a"},
        "safety_identifier": "sid",
        "prompt_cache_key": "pck",
        "user": "u-1",
    }
    d = template_dict(body, response_id="resp_fixed")
    assert d["id"] == "resp_fixed"
    for key in ("instructions", "previous_response_id", "tool_choice", "parallel_tool_calls", "truncation",
                "temperature", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs",
                "max_output_tokens", "max_tool_calls", "store", "service_tier", "metadata",
                "safety_identifier", "prompt_cache_key", "user"):  # fmt: skip
        assert d[key] == body[key], key
    assert d["tools"] == [{"type": "function", "name": "get_weather", "description": "Weather.",
                           "parameters": tool["parameters"], "strict": True}]  # fmt: skip
    assert d["text"] == {"format": {"type": "json_object"}, "verbosity": "low"}
    assert d["reasoning"] == {"effort": "high", "summary": "auto"}
    validate_response(d)


def test_template_conversation_forms():
    assert template_dict({"conversation": "conv_1"})["conversation"] == {"id": "conv_1"}
    d = template_dict({"conversation": {"id": "conv_2"}})
    assert d["conversation"] == {"id": "conv_2"}
    validate_response(d)


# --- a realistic Codex turn ---------------------------------------------------------------------


PATCH_GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?'
EXEC_SCHEMA = {
    "type": "object",
    "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
    "required": ["cmd"],
    "additionalProperties": False,
}
PATCH = "*** Begin Patch\n*** Update File: a.py\n@@\n-print(1)\n+print(2)\n*** End Patch\n"


def codex_body() -> dict[str, Any]:
    return {
        "model": "gpt-5.5",
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [
                {"type": "input_text", "text": "<permissions instructions>full access</permissions instructions>"},
                {"type": "input_text", "text": "<collaboration_mode>default</collaboration_mode>"},
            ]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "<environment_context><cwd>/w</cwd></environment_context>"},
            ]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Make a.py print 2."}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": None,
             "encrypted_content": sealing.seal_reasoning("Look at a.py first.")},
            {"type": "message", "role": "assistant", "id": "msg_1", "phase": "commentary",
             "content": [{"type": "output_text", "text": "Reading a.py.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_exec", "name": "exec_command",
             "arguments": '{"cmd":"cat a.py"}'},
            {"type": "function_call_output", "call_id": "call_exec", "output": "print(1)\n"},
            {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "Patch it"}],
             "content": None, "encrypted_content": sealing.seal_reasoning("Now patch it.")},
            {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_patch", "name": "apply_patch",
             "input": PATCH, "status": "completed"},
            {"type": "custom_tool_call_output", "call_id": "call_patch", "output": "Success. Updated: M a.py"},
            {"type": "function_call", "call_id": "call_ls", "name": "list", "namespace": "mcp__files",
             "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_ls", "output": [{"type": "input_text", "text": "a.py"}]},
            {"type": "message", "role": "developer", "content": "<turn_aborted>no</turn_aborted>"},
        ],
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Run a command.", "strict": False,
             "parameters": EXEC_SCHEMA},
            {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
             "format": {"type": "grammar", "syntax": "lark", "definition": PATCH_GRAMMAR}},
            {"type": "tool_search", "execution": "client", "description": "Find more tools.",
             "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
            {"type": "namespace", "name": "mcp__files", "description": "Files MCP server",
             "tools": [{"type": "function", "name": "list", "description": "List files.", "strict": False,
                        "parameters": {"type": "object", "properties": {}}}]},
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "xhigh", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "019c-thread",
        "text": {"verbosity": "low"},
        "client_metadata": {"x-codex-installation-id": "abc"},
    }


def test_codex_request_translates_whole():
    dialect = ChatDialect(max_tokens_param="max_completion_tokens", effort_map={"xhigh": "high"})
    req = parse(codex_body())
    body, tmap = to_chat_request(req, input_items(req), "deepseek-chat", dialect, sealing.unseal)
    assert body == {
        "model": "deepseek-chat",
        "messages": [
            {"role": "system", "content": (
                "You are Codex, a coding agent.\n\n"
                "<permissions instructions>full access</permissions instructions>\n"
                "<collaboration_mode>default</collaboration_mode>\n\n"
                "<turn_aborted>no</turn_aborted>"
            )},
            {"role": "user", "content": "<environment_context><cwd>/w</cwd></environment_context>"},
            {"role": "user", "content": "Make a.py print 2."},
            {
                "role": "assistant",
                "content": "Reading a.py.",
                "tool_calls": [{"id": "call_exec", "type": "function",
                                "function": {"name": "exec_command", "arguments": '{"cmd":"cat a.py"}'}}],
                "reasoning_content": "Look at a.py first.",
            },
            {"role": "tool", "tool_call_id": "call_exec", "content": "print(1)\n"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_patch", "type": "function",
                                "function": {"name": "apply_patch", "arguments": json.dumps({"input": PATCH}, separators=(",", ":"))}}],
                "reasoning_content": "Now patch it.",
            },
            {"role": "tool", "tool_call_id": "call_patch", "content": "Success. Updated: M a.py"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_ls", "type": "function",
                                "function": {"name": "mcp__files__list", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_ls", "content": "a.py"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "exec_command", "parameters": EXEC_SCHEMA,
                                              "description": "Run a command.", "strict": False}},
            {"type": "function", "function": {
                "name": "apply_patch",
                "parameters": {
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": (
                        "The raw input for this tool. It must match this lark grammar:\n" + PATCH_GRAMMAR)}},
                    "required": ["input"],
                },
                "description": "Edit files with a patch.",
            }},
            # the client-executed tool search is offered as a function (engine/tool_policy.py)
            {"type": "function", "function": {"name": "tool_search", "description": "Find more tools.",
                                              "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "mcp__files__list",
                                              "parameters": {"type": "object", "properties": {}},
                                              "description": "List files.", "strict": False}},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning_effort": "high",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert tmap == {
        "exec_command": ToolTarget("function", "exec_command"),
        "apply_patch": ToolTarget("custom", "apply_patch"),
        "tool_search": ToolTarget("tool_search", "tool_search"),
        "mcp__files__list": ToolTarget("function", "list", "mcp__files"),
    }


def test_codex_template_echoes_its_tools_for_the_sdk():
    d = template_dict({k: v for k, v in codex_body().items() if k not in ("model", "input")})
    assert d["store"] is False and d["prompt_cache_key"] == "019c-thread"
    assert [t["type"] for t in d["tools"]] == ["function", "custom", "tool_search", "namespace", "web_search"]
    assert d["tools"][1]["format"]["definition"] == PATCH_GRAMMAR
    assert d["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    # Codex is an OpenAI client: its custom/namespace/hosted tools are OpenAI-only, and the Open
    # Responses ResponseResource only types function tools, so only the SDK check applies here.
    OPENAI_RESPONSE.validate_python(d)
