"""Response heads built once a second and reused (issue 12: a scrape copies bytes, it does not
validate headers): the same answer within a second gets the same h11 event, and everything that
changes the head (the second, the length, closing, the web config's headers) gets its own."""

from __future__ import annotations

from mig_exporter.exporter.heads import MAX_KEPT, ResponseHeads
from mig_exporter.exporter.routes import SERVER_HEADER, Answer

METRICS = Answer(200, b"up 1\n", {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def headers(heads: ResponseHeads, reply: Answer, close: bool = False) -> dict[bytes, bytes]:
    return dict(heads.response(reply, close).headers)


def test_one_head_per_answer_within_a_second_and_a_new_date_the_next() -> None:
    clock = Clock(1_700_000_000.2)
    heads = ResponseHeads({}, clock)
    first = heads.response(METRICS, False)
    clock.now += 0.7  # the same second
    assert heads.response(Answer(200, b"up 0\n", dict(METRICS.headers)), False) is first
    clock.now += 0.2  # the next one
    later = heads.response(METRICS, False)
    assert later is not first
    assert dict(first.headers)[b"date"] == b"Tue, 14 Nov 2023 22:13:20 GMT"
    assert dict(later.headers)[b"date"] == b"Tue, 14 Nov 2023 22:13:21 GMT"


def test_the_head_says_what_the_answer_is() -> None:
    heads = ResponseHeads({"X-Frame-Options": "deny"}, Clock(0.0))
    plain = headers(heads, METRICS)
    assert plain == {b"server": SERVER_HEADER.encode(), b"date": b"Thu, 01 Jan 1970 00:00:00 GMT",
                     b"x-frame-options": b"deny",
                     b"content-type": b"text/plain; version=0.0.4; charset=utf-8", b"content-length": b"5"}
    assert headers(heads, METRICS, close=True) == {**plain, b"connection": b"close"}
    assert headers(heads, Answer(200, b"up 10\n", METRICS.headers))[b"content-length"] == b"6"
    missing = heads.response(Answer(404, b"no\n", {}), False)
    assert (missing.status_code, missing.reason) == (404, b"Not Found")


def test_past_the_bound_heads_are_built_but_not_kept() -> None:
    heads = ResponseHeads({}, Clock(5.0))
    varied = [Answer(200, b"x" * n) for n in range(MAX_KEPT + 5)]
    for reply in varied:
        heads.response(reply, False)
    assert heads.response(varied[0], False) is heads.response(varied[0], False)
    last = varied[-1]
    assert heads.response(last, False) is not heads.response(last, False)
    assert headers(heads, last)[b"content-length"] == str(MAX_KEPT + 4).encode()
