"""A Codex-sized request, built deterministically: about 100 KB of input items and 20 tools.

``responses_body(model)`` is what a Codex CLI turn deep into a session sends to ``/v1/responses``
(instructions, developer and user messages, ~25 function_call / function_call_output pairs with
shell output, an apply_patch custom tool call, ``store: false``); ``chat_body(model)`` is the same
conversation as a Chat Completions body, which the "direct" rows send to the upstream, so the
direct baseline carries the same bytes minus the translation.

    python bench/codex_request.py   # prints the sizes
"""

from __future__ import annotations

import json
import random

_WORDS = (
    "the gateway translates each request into a chat completion body and streams the answer "
    "back as typed events while tool calls keep their ids and reasoning is sealed so nothing "
    "a client relies on is dropped when the upstream sends quirks such as empty choices or "
    "usage in every chunk the decoder handles them all"
).split()

_CODE = [
    'def feed(self, chunk: bytes) -> list["SseEvent"]:',
    '    buf = self._buf + chunk if self._buf else chunk',
    '    lines = buf.split(b"\\n")',
    '    self._buf = lines.pop()  # the unterminated tail',
    '    for line in lines:',
    '        self._line(line, out)',
    'async def pump(self, turn, resp, emit) -> None:',
    '    """Upstream body -> pipeline -> emit(frames)."""',
    '    with trio.move_on_after(t.total) as total_scope:',
    "        log.info('client went away; upstream request cancelled')",
    'src/engine/stages/builder.py:214:    return [OutputTextDelta(item_id=self._msg_id, delta=d.text)]',
    'tests/test_http_sdk.py::test_stream_roundtrip PASSED                                [ 42%]',
    '-rw-r--r-- 1 dev dev  10708 Nov 22 00:27 README.md',
    '{"type": "response.output_text.delta", "delta": "caf\\u00e9 \\u2014 na\\u00efve", "sequence_number": 7}',
]


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n_words))


def _shell_output(rng: random.Random, size: int) -> str:
    lines = []
    total = 0
    while total < size:
        line = rng.choice(_CODE) if rng.random() < 0.7 else _text(rng, rng.randint(4, 14))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def _schema(rng: random.Random, n_props: int) -> dict:
    props = {}
    for i in range(n_props):
        kind = ("string", "integer", "boolean", "array")[i % 4]
        p: dict = {"type": kind, "description": _text(rng, rng.randint(8, 20))}
        if kind == "array":
            p["items"] = {"type": "string"}
        props[f"param_{i}"] = p
    return {"type": "object", "properties": props, "required": ["param_0"], "additionalProperties": False}


APPLY_PATCH_GRAMMAR = """start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?
hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?
filename: /(.+)/
add_line: "+" /(.*)/ LF -> line
change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF
%import common.LF
"""


def _tools(rng: random.Random) -> list[dict]:
    names = [
        "exec_command", "write_stdin", "update_plan", "view_image", "list_mcp_resources",
        "list_mcp_resource_templates", "read_mcp_resource", "grep_files", "read_file", "list_dir",
        "git_status", "git_diff", "run_tests", "search_docs", "open_issue", "comment_issue",
        "fetch_logs", "query_metrics", "spawn_agent",
    ]
    tools: list[dict] = [
        {
            "type": "function",
            "name": name,
            "description": _text(rng, rng.randint(30, 90)),
            "strict": False,
            "parameters": _schema(rng, rng.randint(3, 9)),
        }
        for name in names
    ]
    tools.append(
        {
            "type": "custom",
            "name": "apply_patch",
            "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool.",
            "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH_GRAMMAR},
        }
    )
    return tools


def _conversation(rng: random.Random) -> tuple[str, list[dict]]:
    instructions = "You are Codex, a coding agent. " + _text(rng, 1300)
    items: list[dict] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions instructions>" + _text(rng, 450) + "</permissions instructions>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "# AGENTS.md instructions\n\n<INSTRUCTIONS>\n" + _text(rng, 700) + "\n</INSTRUCTIONS>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/home/dev/project</cwd>\n  <shell>bash</shell>\n</environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the failing test in tests/test_stages.py and explain the cause. " + _text(rng, 60)}]},
    ]
    for i in range(25):
        call_id = f"call_{i:03d}_{rng.randrange(16**12):012x}"
        if i % 6 == 5:
            patch = "*** Begin Patch\n*** Update File: engine/stages/sse.py\n@@\n" + "\n".join(
                ("-" if k % 2 else "+") + rng.choice(_CODE) for k in range(30)
            ) + "\n*** End Patch\n"
            items.append({"type": "custom_tool_call", "call_id": call_id, "name": "apply_patch", "input": patch})
            items.append({"type": "custom_tool_call_output", "call_id": call_id, "output": "Success. Updated the following files:\nM engine/stages/sse.py\n"})
        else:
            args = {"cmd": f"rg -n 'feed' engine/ tests/ | head -{40 + i}", "workdir": "/home/dev/project", "yield_time_ms": 10000}
            items.append({"type": "function_call", "call_id": call_id, "name": "exec_command", "arguments": json.dumps(args)})
            items.append({"type": "function_call_output", "call_id": call_id, "output": "Exit code: 0\nOutput:\n" + _shell_output(rng, 3300)})
        if i % 5 == 4:
            items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": _text(rng, 50)}]})
    return instructions, items


def responses_body(model: str, *, stream: bool = False) -> dict:
    rng = random.Random(6)
    tools = _tools(rng)
    instructions, items = _conversation(rng)
    return {
        "model": model,
        "instructions": instructions,
        "input": items,
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": stream,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "bench-session-0001",
    }


def _chat_tool(t: dict) -> dict:
    if t["type"] == "custom":
        params = {"type": "object", "properties": {"input": {"type": "string", "description": t["format"]["definition"]}}, "required": ["input"]}
        return {"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": params}}
    return {"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["parameters"], "strict": t["strict"]}}


def chat_body(model: str, *, stream: bool = False) -> dict:
    rng = random.Random(6)
    tools = _tools(rng)
    instructions, items = _conversation(rng)
    messages: list[dict] = [{"role": "system", "content": instructions}]
    for it in items:
        kind = it["type"]
        if kind == "message":
            role = "system" if it["role"] == "developer" else it["role"]
            messages.append({"role": role, "content": "".join(p["text"] for p in it["content"])})
        elif kind in ("function_call", "custom_tool_call"):
            args = it["arguments"] if kind == "function_call" else json.dumps({"input": it["input"]})
            messages.append({"role": "assistant", "content": None, "tool_calls": [{"id": it["call_id"], "type": "function", "function": {"name": it["name"], "arguments": args}}]})
        else:
            messages.append({"role": "tool", "tool_call_id": it["call_id"], "content": it["output"]})
    body = {
        "model": model,
        "messages": messages,
        "tools": [_chat_tool(t) for t in tools],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning_effort": "medium",
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


if __name__ == "__main__":
    r = responses_body("bench-n20")
    c = chat_body("bench-n20")
    print("responses body:", len(json.dumps(r)), "bytes;", "input items:", len(r["input"]), "=", len(json.dumps(r["input"])), "bytes;", "tools:", len(r["tools"]), "=", len(json.dumps(r["tools"])), "bytes")
    print("chat body:", len(json.dumps(c)), "bytes")
