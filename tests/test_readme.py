"""The README's config example works as written."""

from __future__ import annotations

import re

import httpx

from conftest import ROOT


def test_readme_config_example_starts(start_server):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```toml\n(\[server\].*?)```", text, re.S).group(1)
    # the example's port would clash with a running server; everything else is used as written
    block = re.sub(r"^port = \d+", "port = 0", block, flags=re.M)
    server = start_server([], config=block, env={"DEEPSEEK_API_KEY": "sk-example", "ANTHROPIC_API_KEY": "sk-example", "OPENAI_API_KEY": "sk-example", "GEMINI_API_KEY": "sk-example"})
    assert httpx.get(server.base + "/health").status_code == 200
    models = httpx.get(server.url + "/models", headers={"authorization": "Bearer sk-team-a"}).json()
    assert "deepseek-chat" in {m["id"] for m in models["data"]}
    r = httpx.get(server.url + "/models", headers={"authorization": "Bearer sk-team-c-ci"})
    assert r.status_code == 200
    r = httpx.get(server.url + "/models")
    assert r.status_code == 401
