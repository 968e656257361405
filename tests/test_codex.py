"""The real Codex CLI (npm @openai/codex 0.169.0) runs tool loops through respline.

Codex talks to a real respline server, which talks to the scripted Chat Completions upstream.
The CLI is installed once into .cache/codex with npm (about 400 MB, cached between runs);
``RESPLINE_CODEX`` may point at an existing binary instead. Without npm the module is skipped,
saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, TEST_KEY
from upstream import Reply, text_stream, tool_stream

CODEX_VERSION = "0.169.0"
CACHE = ROOT / ".cache" / "codex"


def _codex_binary() -> Path:
    env = os.environ.get("RESPLINE_CODEX")
    if env:
        return Path(env)
    binary = CACHE / "node_modules" / ".bin" / "codex"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed, so the Codex CLI cannot be installed here")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), f"@openai/codex@{CODEX_VERSION}"],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return binary


@pytest.fixture(scope="module")
def codex() -> Path:
    binary = _codex_binary()
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CODEX_HOME": str(CACHE / "home-version")})
    assert CODEX_VERSION in out.stdout, out.stdout + out.stderr
    return binary


# what every Codex run here is set to (after the keys naming its model and provider): no
# approvals, no sandbox, no update check, no web search, analytics, feedback or plug-ins
SETTINGS = """
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
web_search = "disabled"
{extra}

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
apps = false
{features}
"""

CONFIG = """
model = "gpt-5.5"
model_provider = "respline"
""" + SETTINGS + """
[model_providers.respline]
name = "respline"
base_url = "{url}"
wire_api = "responses"
env_key = "RESPLINE_TEST_KEY"
supports_websockets = {ws}
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000
"""


def exec_codex(
    codex: Path, config: str, tmp: Path, prompt: str, env: dict[str, str], *, args: tuple[str, ...] = (), timeout: float = 120
) -> tuple[list[dict], Path]:
    """``codex exec`` of ``prompt`` with ``config`` as its config.toml, in a fresh CODEX_HOME and
    work folder under ``tmp``, with no proxy in its way: its JSON events and the work folder."""
    home, work = tmp / "codex-home", tmp / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(config)
    full_env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    full_env.update({"CODEX_HOME": str(home), "NO_PROXY": "127.0.0.1,localhost", **env})
    proc = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", "--ephemeral", "--json", *args, prompt],
        cwd=work, env=full_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"codex failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")], work


def run_codex(codex: Path, url: str, tmp: Path, prompt: str, websockets: bool = False) -> tuple[list[dict], Path]:
    """Codex with respline as a configured Responses provider; its last message in tmp/last.txt."""
    config = CONFIG.format(url=url, ws="true" if websockets else "false", extra="", features="")
    return exec_codex(codex, config, tmp, prompt, {"RESPLINE_TEST_KEY": TEST_KEY}, args=("-o", str(tmp / "last.txt")))


def items(events: list[dict], kind: str) -> list[dict]:
    return [e["item"] for e in events if e.get("type") == "item.completed" and e["item"].get("type") == kind]


def assert_ran(events: list[dict], printed: str, answer: str) -> dict:
    """Codex ran a command whose output holds ``printed``, and ``answer`` was its last message;
    the command's item back for more asserts."""
    commands = items(events, "command_execution")
    assert commands and printed in commands[0]["aggregated_output"]
    assert items(events, "agent_message")[-1]["text"] == answer
    return commands[0]


def test_codex_exec_tool_loop(codex, respline, upstream, tmp_path):
    upstream.queue(
        Reply(tool_stream("exec_command", '{"cmd": "echo hi-from-codex"}', call_id="call_codex_1", reasoning="I will run it.")),
        Reply(text_stream("The command printed hi-from-codex.")),
    )
    events, _ = run_codex(codex, respline.url, tmp_path, "Run echo hi-from-codex and report the output")
    assert assert_ran(events, "hi-from-codex", "The command printed hi-from-codex.")["exit_code"] == 0
    assert events[-1]["type"] == "turn.completed"
    assert (tmp_path / "last.txt").read_text().strip() == "The command printed hi-from-codex."

    assert len(upstream.requests) == 2
    first, second = (r["body"] for r in upstream.requests)
    # Codex's developer messages became the one leading system message; tools were flattened
    assert first["messages"][0]["role"] == "system"
    names = {t["function"]["name"] for t in first["tools"]}
    assert {"exec_command", "apply_patch"} <= names
    # second turn: reasoning round-tripped (sealed in encrypted_content), the call, its output
    assistant = [m for m in second["messages"] if m.get("tool_calls")][0]
    assert assistant["tool_calls"][0]["id"] == "call_codex_1"
    assert assistant["reasoning_content"] == "I will run it."
    tool_msg = [m for m in second["messages"] if m["role"] == "tool"][0]
    assert tool_msg["tool_call_id"] == "call_codex_1"
    assert "hi-from-codex" in tool_msg["content"]


def test_codex_apply_patch_custom_tool(codex, respline, upstream, tmp_path):
    patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello from respline\n*** End Patch\n"
    upstream.queue(
        Reply(tool_stream("apply_patch", json.dumps({"input": patch}), call_id="call_patch_1")),
        Reply(text_stream("Created hello.txt.")),
    )
    events, work = run_codex(codex, respline.url, tmp_path, "Create hello.txt")
    assert (work / "hello.txt").read_text() == "hello from respline\n"
    assert items(events, "agent_message")[-1]["text"] == "Created hello.txt."
    second = upstream.requests[1]["body"]
    assistant = [m for m in second["messages"] if m.get("tool_calls")][0]
    call = assistant["tool_calls"][0]
    assert call["function"]["name"] == "apply_patch"
    assert json.loads(call["function"]["arguments"]) == {"input": patch}
    tool_msg = [m for m in second["messages"] if m["role"] == "tool"][0]
    assert tool_msg["tool_call_id"] == "call_patch_1"


def test_codex_websocket_tool_loop(codex, respline, upstream, tmp_path):
    """supports_websockets = true: prewarm, then turns that send only new items plus
    previous_response_id with store: false, continued from the connection cache."""
    upstream.queue(
        Reply(tool_stream("exec_command", '{"cmd": "echo over-websocket"}', call_id="call_ws_1", reasoning="Run it.")),
        Reply(text_stream("It printed over-websocket.")),
    )
    events, _ = run_codex(codex, respline.url, tmp_path, "Run echo over-websocket", websockets=True)
    # no fallback to HTTP happened
    assert not [e for e in events if e.get("item", {}).get("type") == "error"], events
    assert_ran(events, "over-websocket", "It printed over-websocket.")
    assert len(upstream.requests) == 2  # the prewarm made no upstream call
    second = upstream.requests[1]["body"]["messages"]
    # the whole context reached the upstream although Codex sent only the new items
    assert second[0]["role"] == "system"
    assistant = [m for m in second if m.get("tool_calls")][0]
    assert assistant["tool_calls"][0]["id"] == "call_ws_1"
    assert assistant["reasoning_content"] == "Run it."
    assert "over-websocket" in [m for m in second if m["role"] == "tool"][0]["content"]
