"""Process logging: plain text or one JSON object per line, with the current request's id.

``CONVEYOR_LOG_FORMAT=json`` switches every Conveyor process (``serve``, its worker processes)
to JSON lines: ``{"time", "level", "logger", "message", "request_id"?, "process", "exc_info"?}``.
The API sets ``request_id`` (from ``X-Request-ID``, or a new one) for everything logged while
it handles a request.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("conveyor_request_id", default=None)
FORMATS = ("text", "json")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


_KEY_IN_QUERY = re.compile(r"([?&]key=)[^&\s\"]*", re.IGNORECASE)


def redact_query_keys(text: str) -> str:
    """``?key=<api key>`` (the event streams accept one) with the key replaced by ``[redacted]``."""
    return _KEY_IN_QUERY.sub(r"\1[redacted]", text)


class RedactKeysFilter(logging.Filter):
    """Keeps API keys sent as ``?key=`` out of access log lines (uvicorn logs the full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "key=" in a for a in record.args):
            record.args = tuple(redact_query_keys(a) if isinstance(a, str) else a for a in record.args)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str | None = None) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process_name or record.processName,
        }
        rid = getattr(record, "request_id", None)
        if rid:
            body["request_id"] = rid
        if record.exc_info:
            body["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def log_format() -> str:
    value = os.environ.get("CONVEYOR_LOG_FORMAT", "text").strip().lower()
    return value if value in FORMATS else "text"


def configure(level: str, *, process_name: str | None = None, text_format: str | None = None) -> None:
    """Configure the root logger once for this process (replacing handlers set before)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if log_format() == "json":
        handler.setFormatter(JsonFormatter(process_name))
    else:
        prefix = f"{process_name} " if process_name else ""
        handler.setFormatter(
            logging.Formatter(text_format or f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
