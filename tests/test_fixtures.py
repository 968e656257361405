"""Golden replays of the project's own upstream fixtures (fixtures/{chat,anthropic,responses}/*,
see fixtures/README.md), each through the pipeline of its folder's upstream kind.

1. Each upstream.sse replays byte for byte to expected.sse, and expected.sse is a valid stream
   (every event for both SDKs, the SPEC 1.5 lifecycle, the final Response).
2. Property: any split of the upstream bytes gives the same frames (ARCHITECTURE.md "any split
   of the input bytes gives the same output"), including single bytes, cuts inside CRLF and
   inside multi-byte UTF-8 characters.

expected.sse is written by tests/regen_fixtures.py, never by this test.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regen_fixtures import fixture_dirs, fixture_name, fixture_options, render
from validate import checked, parse_sse, validate_response

FIXTURES = fixture_dirs()
NAMES = [fixture_name(p) for p in FIXTURES]
BY_NAME = {fixture_name(p): p for p in FIXTURES}


def load(name: str) -> tuple[bytes, bytes, dict]:
    path = BY_NAME[name]
    return (path / "upstream.sse").read_bytes(), (path / "expected.sse").read_bytes(), fixture_options(path)


def split(data: bytes, cuts) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


def test_there_are_fixtures():
    assert len(fixture_dirs(["chat"])) >= 30
    assert len(fixture_dirs(["anthropic"])) >= 15  # QUIRKS G and SPEC 7
    assert len(fixture_dirs(["responses"])) >= 20  # QUIRKS I
    for path in FIXTURES:
        assert (path / "expected.sse").is_file(), f"{path.name}: run tests/regen_fixtures.py"


@pytest.mark.parametrize("name", NAMES)
def test_golden(name):
    upstream, expected, options = load(name)
    got = render([upstream], options)
    assert got == expected, f"{name}: replay differs from expected.sse (read it, then regen_fixtures.py)"


@pytest.mark.parametrize("name", NAMES)
def test_expected_is_valid(name):
    _, expected, options = load(name)
    events = parse_sse(expected)
    dialect = options.get("reasoning_dialect", "openai")
    checked(events, dialect)
    validate_response(events[-1]["response"])
    if "model" in options:
        assert events[0]["response"]["model"] == options["model"]


@pytest.mark.parametrize("name", NAMES)
def test_single_byte_pieces(name):
    upstream, expected, options = load(name)
    assert render([upstream[i : i + 1] for i in range(len(upstream))], options) == expected


@pytest.mark.parametrize("name", NAMES)
def test_cuts_at_every_line_boundary_byte(name):
    """Cut right after every CR and right before every LF: splits CRLF and line ends both ways."""
    upstream, expected, options = load(name)
    cuts = [i for i, b in enumerate(upstream) if b == 10] + [i + 1 for i, b in enumerate(upstream) if b == 13]
    assert render(split(upstream, cuts), options) == expected


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_split_gives_same_output(name, data):
    upstream, expected, options = load(name)
    cuts = data.draw(st.lists(st.integers(0, len(upstream)), max_size=40), label="cuts")
    pieces = split(upstream, cuts)
    if data.draw(st.booleans(), label="empty pieces"):
        pieces = [p for piece in pieces for p in (b"", piece)]  # empty reads are legal too
    assert render(pieces, options) == expected
