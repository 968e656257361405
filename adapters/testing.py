"""respline's pytest plug-in: test an agent against recorded provider traffic.

Enabled by its entry point once respline is installed (or with ``-p respline.adapters.testing``). It
adds one fixture, ``respline_replay``: a ``respline serve --replay`` process on a free port,
answering from the test's cassette, and yields its base URL (``http://127.0.0.1:PORT/v1``) for
the agent under test. The cassette is ``cassettes/<test module>/<test name>`` beside the test
file (``@pytest.mark.respline(cassette="name")`` names another, relative to that folder).

Recording: ``--respline-record`` (or ``RESPLINE_RECORD=all``) runs ``respline serve --record``
against the live upstream instead and writes the cassette anew; ``--respline-record=missing``
(``RESPLINE_RECORD=missing``) records only the cassettes that do not exist yet. The live upstream
is given as ``respline serve`` arguments: the ``respline_record_args`` fixture (override it), else
the ``respline_record_args`` ini option, else ``RESPLINE_RECORD_ARGS``, e.g.
``--upstream https://api.openai.com/v1 --upstream-kind openai-responses --upstream-key-env OPENAI_API_KEY``.
Without a recording flag a missing cassette fails the test: CI never reaches a live upstream.

Replays are strict: at the end of the test the server is stopped, and a recorded exchange the
agent never asked for, or asked for twice, fails the test (the server's exit code 3 and its
``replay strict`` log line). ``@pytest.mark.respline(strict=False)`` or the ini option
``respline_strict = false`` turns that off; ``pace="recorded"`` replays at the recorded pace.

Nothing here runs unless a test asks for the fixture: with the plug-in installed and unused,
pytest gets two options, three ini keys and a marker, and imports nothing of respline.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

_LISTENING = re.compile(r"respline listening on http://([^\s\"]+):(\d+)")
_MODES = ("all", "missing")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("respline", "respline cassettes (record once, replay in CI)")
    group.addoption(
        "--respline-record",
        nargs="?",
        const="all",
        default=None,
        choices=_MODES,
        help="record cassettes against the live upstream: all (default) or only missing ones",
    )
    parser.addini("respline_record_args", "respline serve arguments that reach the live upstream when recording", type="args")
    parser.addini("respline_strict", "fail a test whose replay left recorded exchanges unused or repeated", type="bool", default=True)
    parser.addini("respline_cassettes", "the cassettes folder, relative to each test file's folder", default="cassettes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "respline(cassette=None, strict=True, pace='fast'): the cassette respline_replay serves, and how",
    )


@pytest.hookimpl(hookwrapper=True)  # the old-style wrapper: pytest 7 loads it too
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Notes whether a test failed, so that its replay's leftovers are not reported on top."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item._respline_failed = report.failed  # type: ignore[attr-defined]


def _mode(config: pytest.Config) -> str | None:
    mode = config.getoption("--respline-record") or os.environ.get("RESPLINE_RECORD") or None
    if mode in ("1", "true", "yes"):
        mode = "all"
    if mode is not None and mode not in _MODES:
        raise pytest.UsageError(f"RESPLINE_RECORD must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


def _marker(request: pytest.FixtureRequest) -> dict:
    m = request.node.get_closest_marker("respline")
    return dict(m.kwargs) if m is not None else {}


@pytest.fixture
def respline_cassette(request: pytest.FixtureRequest) -> Path:
    """The test's cassette directory (override to put it elsewhere)."""
    folder = Path(request.path).parent / request.config.getini("respline_cassettes")
    test = re.sub(r"[^\w.-]+", "_", request.node.name)  # parametrised ids hold brackets and more
    name = _marker(request).get("cassette") or f"{Path(request.path).stem}/{test}"
    return folder / name


@pytest.fixture
def respline_record_args(request: pytest.FixtureRequest) -> list[str]:
    """``respline serve`` arguments that reach the live upstream; asked for only when recording."""
    args = list(request.config.getini("respline_record_args"))
    if not args and os.environ.get("RESPLINE_RECORD_ARGS"):
        args = shlex.split(os.environ["RESPLINE_RECORD_ARGS"])
    return args


@pytest.fixture
def respline_recording(request: pytest.FixtureRequest, respline_cassette: Path) -> bool:
    """Whether this test records (against the live upstream) rather than replays."""
    mode = _mode(request.config)
    return mode == "all" or (mode == "missing" and not (respline_cassette / "cassette.json").exists())


@pytest.fixture
def respline_replay(request: pytest.FixtureRequest, respline_cassette: Path, respline_recording: bool, tmp_path_factory):
    """A respline server for this test: replaying its cassette, or recording it. Yields the
    server's base URL (``http://127.0.0.1:PORT/v1``)."""
    opts = _marker(request)
    work = tmp_path_factory.mktemp("respline")
    args = ["--port", "0", "--state-dir", str(work / "state"), "--log-format", "text"]
    strict = opts.get("strict", request.config.getini("respline_strict"))
    if respline_recording:
        live = request.getfixturevalue("respline_record_args")
        if not live:
            pytest.fail(
                "respline: recording needs the live upstream: set respline_record_args (ini, fixture) "
                "or RESPLINE_RECORD_ARGS to `respline serve` arguments such as --upstream URL"
            )
        if respline_cassette.exists():
            shutil.rmtree(respline_cassette)  # re-recorded whole: no exchange of the old one stays
        respline_cassette.parent.mkdir(parents=True, exist_ok=True)
        args += ["--record", str(respline_cassette), *live]
    else:
        if not (respline_cassette / "cassette.json").exists():
            pytest.fail(f"respline: no cassette at {respline_cassette}: record it with --respline-record (RESPLINE_RECORD=missing)")
        args += ["--replay", str(respline_cassette), "--replay-pace", opts.get("pace", "fast")]
        if strict:
            args.append("--replay-strict")
    server = _Server(args, work)
    try:
        yield server.url
    finally:
        code, log = server.stop()
    if respline_recording:
        if code != 0:
            pytest.fail(f"respline (recording) exited with {code}:\n{log}")
        return
    if code != 0 and not getattr(request.node, "_respline_failed", False):
        lines = [line for line in log.splitlines() if "replay strict" in line] or log.splitlines()[-5:]
        pytest.fail(f"respline replay of {respline_cassette} (exit {code}):\n" + "\n".join(lines), pytrace=False)


class _Server:
    """``respline serve`` as a child process, ready once it logs where it listens."""

    def __init__(self, args: list[str], work: Path, timeout: float = 30.0) -> None:
        self.log_path = work / "respline.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "respline.adapters.cli", "serve", *args]
        self.proc = subprocess.Popen(cmd, cwd=work, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            m = _LISTENING.search(self.log())
            if m:
                self.url = f"http://{m.group(1)}:{m.group(2)}/v1"
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code, log = self.stop()
                pytest.fail(f"respline did not start (exit {code}):\n{log}", pytrace=False)
            time.sleep(0.05)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> tuple[int | None, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        log = self.log()
        self._log.close()
        return self.proc.returncode, log
