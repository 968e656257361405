"""Log lines: JSON (one object per line, for jq and log shippers) or text, with the request id.

``setup`` installs one handler on the root logger. A filter copies the current request's id (a
context variable that the front end sets for each request, WebSocket turn and background run)
onto every record, so every line about a request carries its id without each call passing it.

What is never logged: API keys (client or upstream), prompt or output text, sealed content. The
request line carries counts, names from the config and ids only (tests/test_observability.py
greps a whole run's log for every key and text it used).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import Any

import msgspec

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("respline_request_id", default=None)

_encode = msgspec.json.Encoder().encode


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


_second: tuple[int, str] = (-1, "")  # the last whole second formatted: lines come many a second


def _utc(created: float) -> str:
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return _second[1] + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "msg", "request_id"?, ...fields, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,  # which worker, with --workers N
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _encode(out).decode()


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger: message key=value ... [request_id]`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record.created)} {record.levelname} {record.name}: {_escaped(record.getMessage())}"
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None and v != [])
        rid = getattr(record, "request_id", None)
        if rid is not None and not (fields and "request_id" in fields):
            line += f" request_id={_text(rid)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Field values come from clients too (the model name, the path with its %0A decoded): a value
# that is not one plain printable word is quoted, with every character that could end the line
# (CR, LF, U+2028, ...) or fake a field escaped, so each record stays one line of its own.
_PLAIN = re.compile(r'[^\s"=\\]+')


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.isprintable():
        return text
    return '"' + _escaped(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _escaped(text: str) -> str:
    """``text`` with each character that is not printable as an escape (``\\n``, ``\\u2028``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


_ESCAPE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    return _ESCAPE.get(c) or (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")


def default_format() -> str:
    """JSON where a machine reads the output, text on a terminal."""
    return "text" if sys.stderr.isatty() else "json"


def setup(level: str = "info", fmt: str | None = None) -> None:
    fmt = fmt or default_format()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # What no line here shows is not gathered for each record (a fifth of a request line's cost):
    # the caller's file and line (a walk up the stack), the thread, the multiprocessing name
    logging._srcfile = None  # the logging HOWTO's "Optimization" section names this switch
    logging.logThreads = False
    logging.logMultiprocessing = False
    # one line per upstream call from httpx would repeat what the request line says
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
