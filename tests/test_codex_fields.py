"""The real Codex CLI 0.169.0 with its built-in OpenAI provider pointed at respline
(``openai_base_url``, the setup most people try first): remote compaction through a final
``compaction_trigger`` item, and deferred tools found through client ``tool_search``.

Codex installs as tests/test_codex.py installs it (skipped, saying why, without npm). The
built-in provider speaks WebSocket mode (it falls back to HTTP only when the upgrade is refused).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TEST_KEY
from test_codex import SETTINGS, codex, exec_codex, items  # noqa: F401 - codex: the fixture that installs and checks the CLI
from upstream import DONE, USAGE, Reply, chunk, text_stream, tool_stream

BUILTIN = """
model = "gpt-5.5"
openai_base_url = "{url}"
""" + SETTINGS

BIG = {"prompt_tokens": 50000, "completion_tokens": 40, "total_tokens": 50040}


def with_usage(pieces: list[bytes], usage: dict) -> list[bytes]:
    """A scripted stream whose usage chunk says ``usage`` (Codex compacts on what it is told)."""
    return [p for p in pieces if b'"usage"' not in p and p != DONE] + [chunk(usage=usage, choices=False), DONE]


def run_builtin(codex: Path, url: str, tmp: Path, prompt: str, *, extra: str = "", features: str = "") -> list[dict]:
    config = BUILTIN.format(url=url, extra=extra, features=features)
    events, _ = exec_codex(codex, config, tmp, prompt, {"OPENAI_API_KEY": TEST_KEY, "CODEX_API_KEY": TEST_KEY}, timeout=180)
    return events


def test_codex_builtin_provider_compacts_and_continues(codex, respline, upstream, tmp_path):  # noqa: F811
    """Over WebSocket, as the built-in provider talks to a server that takes the upgrade (the
    same turns over HTTP are tests/test_fields.py's compaction_trigger tests)."""
    upstream.queue(
        Reply(with_usage(tool_stream("exec_command", '{"cmd": "echo before-compaction"}', call_id="call_c1"), BIG)),
        Reply(text_stream("The user ran echo before-compaction; it printed before-compaction.")),
        Reply(text_stream("Done after compaction.")),
    )
    events = run_builtin(codex, respline.url, tmp_path, "Run echo before-compaction",
                         extra="model_auto_compact_token_limit = 1000")
    assert not [e for e in events if e.get("type") in ("error", "turn.failed")], events
    assert not items(events, "error"), events  # no fall back from WebSocket to HTTP
    assert "before-compaction" in items(events, "command_execution")[0]["aggregated_output"]
    assert items(events, "agent_message")[-1]["text"] == "Done after compaction."
    assert len(upstream.requests) == 3
    summary_call = upstream.requests[1]["body"]["messages"]
    # the summary call saw the whole context (the call and its output) and the instruction
    assert any(m.get("tool_calls") for m in summary_call)
    assert "before-compaction" in [m for m in summary_call if m["role"] == "tool"][0]["content"]
    assert "summary" in summary_call[-1]["content"].lower()
    # Codex continued from the compaction item: the upstream got the summary, not the history
    after = upstream.requests[2]["body"]["messages"]
    assert not any(m.get("tool_calls") for m in after)
    assert any(m["role"] == "user" and m["content"].startswith("Summary of the conversation so far:\nThe user ran echo")
               for m in after)


def test_codex_finds_a_deferred_tool_with_tool_search_and_calls_it(codex, respline, upstream, tmp_path):  # noqa: F811
    """Codex hides its multi-agent tools behind a client-executed ``tool_search``: on a Chat
    upstream the model calls the search, Codex runs it and answers with a tool_search_output,
    and the tools it found are offered from then on, so the model can call one."""
    upstream.queue(
        Reply(tool_stream("tool_search", '{"query": "close a sub-agent"}', call_id="call_search")),
        Reply(tool_stream("multi_agent_v1__close_agent", '{"target": "nobody"}', call_id="call_close")),
        Reply(text_stream("There was no agent to close.")),
    )
    events = run_builtin(codex, respline.url, tmp_path, "Close the sub-agent named nobody")
    assert not [e for e in events if e.get("type") in ("error", "turn.failed")], events
    assert items(events, "agent_message")[-1]["text"] == "There was no agent to close."
    first, second, third = (r["body"] for r in upstream.requests)
    first_tools = [t["function"]["name"] for t in first["tools"]]
    assert "tool_search" in first_tools and "multi_agent_v1__close_agent" not in first_tools
    # Codex ran the search: the call and its output came back, and the found tools are offered
    search = [m for m in second["messages"] if m.get("tool_calls")][-1]["tool_calls"][0]
    assert search["id"] == "call_search" and search["function"]["name"] == "tool_search"
    assert json.loads(search["function"]["arguments"]) == {"query": "close a sub-agent"}
    found = [m for m in second["messages"] if m["role"] == "tool" and m["tool_call_id"] == "call_search"][0]
    assert "multi_agent_v1__close_agent" in found["content"]
    assert "multi_agent_v1__close_agent" in [t["function"]["name"] for t in second["tools"]]
    # the model called the found tool; Codex ran it and sent its output back
    close = [m for m in third["messages"] if m.get("tool_calls")][-1]["tool_calls"][0]
    assert close["function"]["name"] == "multi_agent_v1__close_agent"
    closed = [m for m in third["messages"] if m["role"] == "tool" and m["tool_call_id"] == "call_close"]
    assert closed and closed[0]["content"], third["messages"]
    assert "multi_agent_v1__close_agent" in [t["function"]["name"] for t in third["tools"]]
