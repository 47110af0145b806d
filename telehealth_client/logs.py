"""Logging to stdout as ``key=value`` lines or JSON, for journald.

Call sites log IDs and outcomes only: never PHI, tokens, cipher keys or SDP bodies.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path

_STANDARD = set(vars(logging.makeLogRecord({})))


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"ts={_timestamp(record)} level={record.levelname.lower()} logger={record.name} "
        line += f"msg={json.dumps(record.getMessage())}"
        if record.exc_info:
            line += f" exc={json.dumps(self.formatException(record.exc_info))}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(level: str = "INFO", fmt: str = "kv") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_url_loggers()
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# Loggers of the SDK and HTTP clients, which write request URLs: those carry auth tokens, keys
# and, for GET publishes and token revokes, message bodies and the token itself.
URL_LOGGERS = ("pubnub", "httpx", "httpcore")


def quiet_url_loggers() -> None:
    """Silence the loggers that write request URLs, whatever the root level is.

    Called by ``configure`` and by every module that makes such requests when it is imported,
    so a process (or test) that never calls ``configure`` leaks no token either. Our own code
    logs every failure itself, without URLs.
    """
    for noisy in URL_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def describe_exception(exc: BaseException) -> str:
    """``TypeName at file.py:LINE`` of where it was raised: never the message.

    Exception messages can carry what was being processed (a pydantic error repeats the
    input value), and that may be PHI; the type and the place are enough to find the bug.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"


def exception_reason(exc: BaseException) -> str:
    """The reason text of one of our own exceptions (``BusError.reason``, a ``code: text`` pair),
    which is written to name no PHI; ``-`` for anyone else's, whose message may repeat its input."""
    if not type(exc).__module__.startswith("telehealth_client."):
        return "-"
    reason, operation = getattr(exc, "reason", None), getattr(exc, "operation", None)
    if isinstance(reason, str) and reason:
        return f"{operation}: {reason}" if isinstance(operation, str) else reason
    code, text = getattr(exc, "code", None), getattr(exc, "text", None)
    if isinstance(code, str) and isinstance(text, str):
        return f"{code}: {text}"
    return "-"
