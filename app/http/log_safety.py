"""Log lines a visitor cannot forge or break: control characters in anything logged are escaped.

A request path is the visitor's to choose and is logged (app/http/access_log.py): `GET /x%0AINFO:...` used to
write a second, forged log line, and %00 put a NUL byte in the log. `install()`, called by create_app,
makes every log record's message escape them, whichever logger or handler (uvicorn's included,
which exist only once uvicorn is configured) formats it:

* C0 controls, DEL and C1 controls become \\n, \\r, \\t or \\xHH; U+2028/U+2029 (line and paragraph
  separators, which some viewers break lines at) and the bidirectional overrides and isolates (which
  reorder what a terminal shows) become \\uHHHH. A record stays one line.
* A traceback (or stack) keeps its line breaks, but every line of it is indented with "  | " and
  escaped, so an exception message holding a newline cannot start a line that reads as a record.

It works on the record (a LogRecord subclass, set by the record factory), not on a handler or formatter:
uvicorn replaces handlers and formatters when it configures logging, and a record is made the same way
whoever configured what. The message template and args are left as they are (app.http.server's RepeatFilter
tells kinds of record apart by the template); only what getMessage() returns is escaped.
"""

from __future__ import annotations

import logging
import re

CONTINUATION = "  | "  # the start of every line of a traceback or stack in the log

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _one(m: re.Match[str]) -> str:
    c = m.group(0)
    named = _NAMED.get(c)
    if named:
        return named
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def escape(text: str) -> str:
    """text with every control character (and line separator, and bidi override) written as an escape."""
    return _UNSAFE.sub(_one, text)


def escape_block(text: str) -> str:
    """A multi-line block (a traceback): its lines kept, each escaped and indented with CONTINUATION."""
    return "\n".join(CONTINUATION + escape(line) for line in text.split("\n"))


class SafeLogRecord(logging.LogRecord):
    """A LogRecord whose message, traceback text and stack text never hold a raw control character."""

    def getMessage(self) -> str:  # noqa: N802 (logging's name)
        return escape(super().getMessage())

    @property
    def exc_text(self) -> str | None:  # type: ignore[override]
        return self.__dict__.get("exc_text")

    @exc_text.setter
    def exc_text(self, value: str | None) -> None:  # Formatter.format caches the formatted traceback here
        self.__dict__["exc_text"] = escape_block(value) if value and not value.startswith(CONTINUATION) else value

    @property
    def stack_info(self) -> str | None:  # type: ignore[override]
        return self.__dict__.get("stack_info")

    @stack_info.setter
    def stack_info(self, value: str | None) -> None:
        self.__dict__["stack_info"] = escape_block(value) if value and not value.startswith(CONTINUATION) else value


def install() -> None:
    """Make every log record from now on a SafeLogRecord (idempotent; keeps any record factory already set)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "rnnscope_safe", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if type(record) is logging.LogRecord:
            record.__class__ = SafeLogRecord
            # set before the class changed: run them through the escaping setters
            record.exc_text, record.stack_info = record.__dict__.pop("exc_text", None), record.__dict__.pop(
                "stack_info", None)
        return record

    factory.rnnscope_safe = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
