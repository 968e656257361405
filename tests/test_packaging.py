"""The wheel: only the `respline` namespace and its metadata, the demo's fixtures inside, and an
installed copy that serves the demo from any directory without the source tree."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import ROOT
from launch import Launched
from validate import checked, parse_sse


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built offline from a copy of the sources (a build in place would leave build/ and
    egg-info in the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("engine", "adapters", "fixtures"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src), "-w", str(tmp / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (built,) = (tmp / "dist").glob("respline-*.whl")
    return built


def test_wheel_holds_only_the_respline_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info/"  # respline-0.1.0.dist-info/
    strays = [n for n in names if not (n.startswith("respline/") or n.startswith(dist_info))]
    assert strays == []  # no top-level engine/, adapters/, fixtures/
    demo = sorted(p.name for p in (ROOT / "fixtures" / "demo").glob("*.sse"))
    assert demo and sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("respline/fixtures/demo/")) == demo
    assert "respline/adapters/cli.py" in names and "respline/engine/pipeline.py" in names


def test_installed_wheel_serves_the_demo_from_anywhere(wheel, tmp_path):
    """Installed into a directory of its own and run by a Python that does not load the
    editable install (-S: no site, so no .pth finder): `respline serve --port 0` logs its real
    port, answers `model: demo` from the packaged fixtures, creates nothing in the directory it
    runs from, and keeps its secret owner-only in the state directory."""
    target, work, state = tmp_path / "target", tmp_path / "cwd", tmp_path / "state"
    work.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # the dependencies come from this venv's site-packages, named on the path, not loaded as a site
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = {k: v for k, v in os.environ.items() if k not in ("RESPLINE_STATE_DIR", "XDG_STATE_HOME")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *sorted(deps)])
    python = [sys.executable, "-S"]
    script = str(target / "bin" / "respline")

    where = subprocess.run([*python, "-c", "import respline.adapters.cli as m; print(m.__file__)"], cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(target), where.stdout + where.stderr

    version = subprocess.run([*python, script, "--version"], cwd=work, env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == "respline 0.1.0", version.stdout + version.stderr

    server = Launched([*python, script, "serve", "--port", "0", "--state-dir", str(state)], work, env)
    try:
        port = server.port()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/responses", json={"model": "demo", "input": "hello", "stream": True}, timeout=30)
        events = checked(parse_sse(r.content))
        assert events[-1]["type"] == "response.completed"
        text = events[-1]["response"]["output"][-1]["content"][0]["text"]
        assert text.startswith("Hello from respline")
    finally:
        server.stop()
    assert list(work.iterdir()) == []
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "secret").stat().st_mode) == 0o600
