"""The head of each answer as an h11 event, built once a second and reused by every scrape.

h11 validates every header of every response it is given (a regular expression per name and
value): building the head took most of a scrape's Python time on the event loop, more than
parsing the request. The head of an answer depends only on the answer's status, headers and
length, whether the connection closes after it, and the Date, which changes once a second; so
the events are kept for the current second, and a scrape of the same exposition reuses one.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus

import h11

from mig_exporter.exporter.routes import SERVER_HEADER, Answer

# Distinct heads kept within one second: /metrics plain and gzip, keep-alive or not, /health
# and the error answers; past this, heads are built and not kept (a flood of varied requests).
MAX_KEPT = 32


class ResponseHeads:
    """Not thread-safe: used from the event loop's thread only."""

    def __init__(self, extra_headers: Mapping[str, str], clock: Callable[[], float] = time.time) -> None:
        """``extra_headers``: the web config's ``http_server_config.headers``, on every answer."""
        self._extra = dict(extra_headers)
        self._clock = clock
        self._second: int | None = None
        self._date = ""
        self._kept: dict[tuple[object, ...], h11.Response] = {}

    def response(self, reply: Answer, close: bool) -> h11.Response:
        second = int(self._clock())
        if second != self._second:
            self._second, self._date, self._kept = second, email.utils.formatdate(second, usegmt=True), {}
        key = (reply.status, tuple(reply.headers.items()), len(reply.body), close)
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        headers = {"Server": SERVER_HEADER, "Date": self._date, **self._extra, **reply.headers,
                   "Content-Length": str(len(reply.body))}
        if close:
            headers["Connection"] = "close"
        response = h11.Response(status_code=reply.status, headers=list(headers.items()),
                                reason=HTTPStatus(reply.status).phrase.encode())
        if len(self._kept) < MAX_KEPT:
            self._kept[key] = response
        return response
