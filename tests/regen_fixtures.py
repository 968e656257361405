"""Regenerate fixtures/*/*/expected.sse from each upstream.sse (run by hand, never by pytest).

    .venv/bin/python tests/regen_fixtures.py                 # all fixtures
    .venv/bin/python tests/regen_fixtures.py 30 44           # only names starting with these
    .venv/bin/python tests/regen_fixtures.py anthropic/0     # or with these folder/name prefixes

The folder says the upstream kind (each provider kind names its folder, ``ProviderKind.fixtures``):
fixtures/chat (Chat Completions), fixtures/anthropic (Anthropic Messages), fixtures/responses (a
Responses-API upstream, passed through).

expected.sse is the deterministic replay (engine.replay.replay with its default seeded ids and
fixed clock) of the upstream bytes, with the options in options.json when there is one. A golden
file is only worth keeping once someone has read it against SPEC 1.5 and QUIRKS.md: after
regenerating, read the diff (``git diff fixtures/``) before committing it.

test_fixtures.py imports FIXTURES, fixture_options and render from here, so the test and this
script cannot disagree about how a fixture is replayed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "chat"
OPTION_KEYS = {"think_tags", "reasoning_dialect", "model"}

if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from respline.engine import registry  # noqa: E402
from respline.engine.replay import replay  # noqa: E402

# fixtures/<folder> -> the provider kind whose streams it holds (each kind names its folder)
KINDS = {k.fixtures: k.name for k in registry.kinds().values() if k.fixtures}


def fixture_dirs(folders=tuple(KINDS)) -> list[Path]:
    out: list[Path] = []
    for folder in folders:
        base = ROOT / "fixtures" / folder
        if base.is_dir():
            out += sorted(p for p in base.iterdir() if (p / "upstream.sse").is_file())
    return out


def fixture_name(path: Path) -> str:
    """``chat/01-comment-keepalives``: unique across the kind folders."""
    return f"{path.parent.name}/{path.name}"


def fixture_options(path: Path) -> dict:
    opt = path / "options.json"
    options = json.loads(opt.read_text()) if opt.is_file() else {}
    unknown = set(options) - OPTION_KEYS
    if unknown:
        raise ValueError(f"{opt}: unknown replay options {sorted(unknown)}")
    kind = KINDS[path.parent.name]
    if kind != "openai-chat":
        options["kind"] = kind
    return options


def render(pieces: list[bytes], options: dict) -> bytes:
    return b"".join(replay(pieces, **options))


def main(argv: list[str]) -> int:
    changed = 0
    for path in fixture_dirs():
        if argv and not any(path.name.startswith(a) or fixture_name(path).startswith(a) for a in argv):
            continue
        out = render([(path / "upstream.sse").read_bytes()], fixture_options(path))
        target = path / "expected.sse"
        if not target.is_file() or target.read_bytes() != out:
            target.write_bytes(out)
            changed += 1
            print(f"wrote {target.relative_to(ROOT)}")
    print(f"{changed} expected.sse file(s) changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
