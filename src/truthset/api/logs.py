"""Logging that keeps protected health information (PHI) out of log lines.

What the server logs: one access line per request with the route *template*
(``/api/v1/projects/{key}/items/{item_id}``), the status, the time taken and the caller's user
id; never a concrete path's query string, a request or response body, a header value or an
exception's message (those can carry patient names, accession numbers or label text).

:class:`PhiSafeFilter` enforces the last points on every record that passes a handler it is
attached to: an exception is reduced to its type and the code locations it passed through, and a
uvicorn access line loses its query string. :data:`LOG_CONFIG` is the ``logging.dictConfig`` that
``truthset serve`` hands to uvicorn, with the filter on every handler.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

#: Loggers that carry API records (the filter is also installed on them directly).
API_LOGGER = "truthset.api"


def describe_exception(exc: BaseException, limit: int = 8) -> str:
    """An exception as its type and the innermost code locations, without its message.

    >>> describe_exception(ValueError("Patient DOE^JOHN"))
    'ValueError'
    """
    frames = traceback.extract_tb(exc.__traceback__, limit=None)[-limit:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                        for f in reversed(frames))
    name = type(exc).__qualname__
    return f"{name} at {where}" if where else name


def strip_query(path: Any) -> Any:
    """``path`` without its query string (non-strings are returned unchanged)."""
    return path.split("?", 1)[0] if isinstance(path, str) else path


class PhiSafeFilter(logging.Filter):
    """Rewrites records so that no exception message or query string reaches a handler.

    - a record with ``exc_info`` keeps its own message plus the exception's type and code
      locations (:func:`describe_exception`); the traceback text with the message is dropped;
    - a ``uvicorn.access`` record's path argument loses its query string.

    Records are never dropped, only rewritten.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; always keep it."""
        exc_info = record.exc_info
        if exc_info and exc_info[1] is not None:
            described = describe_exception(exc_info[1])
            record.msg = f"{record.getMessage()} [{described}]"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) \
                and len(record.args) >= 3:
            args = list(record.args)
            args[2] = strip_query(args[2])
            record.args = tuple(args)
        return True


def install(logger_names: tuple[str, ...] = (API_LOGGER, "uvicorn.error")) -> None:
    """Put a :class:`PhiSafeFilter` on the named loggers (once each)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, PhiSafeFilter) for f in logger.filters):
            logger.addFilter(PhiSafeFilter())


#: The uvicorn log configuration of ``truthset serve``: one stderr handler with the PHI filter
#: for uvicorn's own messages and Truthset's; uvicorn's access log (concrete paths with
#: queries) is off, the API's route-template access line replaces it.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"phi": {"()": "truthset.api.logs.PhiSafeFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                    "formatter": "plain", "filters": ["phi"]},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "truthset": {"handlers": ["default"], "level": "INFO", "propagate": False},
    },
}

