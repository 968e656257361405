"""The pytest plug-in (``respline.adapters.testing``) as a team uses it: a project of its own with an agent
test, run by pytest in a subprocess. Recorded once against a live upstream (the scripted one),
replayed with none, and failing usefully when the agent changes or stops early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from upstream import Reply, text_stream, tool_stream

AGENT_TEST = '''
import os

import openai

TOOLS = [{"type": "function", "name": "get_weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def test_agent(respline_replay):
    client = openai.OpenAI(base_url=respline_replay, api_key="sk-ci", max_retries=0)
    first = client.responses.create(model="agent", input="Weather in Paris?", tools=TOOLS)
    call = next(o for o in first.output if o.type == "function_call")
    if os.environ.get("AGENT_STOPS_EARLY"):
        return
    output = os.environ.get("AGENT_TOOL_OUTPUT", "18C")
    answer = client.responses.create(
        model="agent", previous_response_id=first.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": output}],
    )
    assert answer.output_text == "Sunny."
'''


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "test_agent.py").write_text(AGENT_TEST)
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")  # the plug-in leaves it be
    return tmp_path


def pytest_run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RESPLINE_", "AGENT_")) and k != "PYTHONPATH"}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_record_once_then_replay_without_the_upstream(project, upstream):
    cassette = project / "cassettes" / "test_agent" / "test_agent"

    # no cassette yet: the test fails and says how to record it (CI never calls a live upstream)
    out = pytest_run(project)
    assert out.returncode == 1, out.stdout
    assert f"no cassette at {cassette}: record it with --respline-record" in out.stdout
    assert "1 passed, 1 error" in out.stdout and upstream.requests == []  # an error in setup

    # record against the live upstream
    upstream.queue(
        Reply(tool_stream("get_weather", '{"city": "Paris"}', call_id="call_1", reasoning="Look it up.")),
        Reply(text_stream("Sunny.")),
    )
    out = pytest_run(project, "--respline-record", RESPLINE_RECORD_ARGS=f"--upstream {upstream.base_url}")
    assert out.returncode == 0, out.stdout
    assert (cassette / "cassette.json").exists() and len(upstream.requests) == 2
    upstream.reset()

    # replay with no upstream: the entry point and -p together register the plug-in once, and
    # RESPLINE_RECORD=missing records only what is missing (this cassette is kept, replayed)
    out = pytest_run(project, "-p", "respline.adapters.testing", RESPLINE_RECORD="missing")
    assert out.returncode == 0, out.stdout
    assert "2 passed" in out.stdout and upstream.requests == []

    # the agent sends a different tool output: the test fails naming the field
    out = pytest_run(project, AGENT_TOOL_OUTPUT="9C")
    assert out.returncode == 1
    assert "respline replay: no recorded exchange matches this request" in out.stdout, out.stdout
    assert 'differs at messages[2].content: recorded "18C", sent "9C"' in out.stdout
    assert "never requested" not in out.stdout  # the failure itself is the report

    # the agent stops after one turn: the replay is strict, the test errors at teardown
    out = pytest_run(project, AGENT_STOPS_EARLY="1")
    assert out.returncode == 1
    assert "1 passed, 1 error" in out.stdout or "2 passed, 1 error" in out.stdout
    assert "1 of 2 recorded exchanges never requested (0002)" in out.stdout


def test_recording_needs_the_upstream_named(project):
    out = pytest_run(project, "--respline-record")
    assert out.returncode == 1
    assert "recording needs the live upstream" in out.stdout
