"""Flag values as node_exporter and Prometheus write them; bad ones name the flag."""

from __future__ import annotations

import pytest

from mig_exporter.errors import InputError
from mig_exporter.exporter.flags import (
    ListenAddress,
    parse_count,
    parse_duration,
    parse_listen_address,
    parse_telemetry_path,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("1s", 1), ("5s", 5), ("1m", 60), ("1m30s", 90), ("2h", 7200), ("1d", 86400),
    ("1w", 604800), ("1y", 31536000), ("1h1m1s1ms", 3661.001),
])
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert parse_duration("--collect.interval", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "1.5s", "-1s", "1s1m", "5 s", "0s", "0ms", "s", "1y1ms",
                                  "99999999999999999999y"])
def test_bad_durations_name_the_flag(text: str) -> None:
    with pytest.raises(InputError, match=r"^--collect\.timeout: "):
        parse_duration("--collect.timeout", text)


@pytest.mark.parametrize(("text", "address"), [
    (":9458", ListenAddress("", 9458)),
    ("127.0.0.1:9458", ListenAddress("127.0.0.1", 9458)),
    ("[::1]:9458", ListenAddress("::1", 9458)),
    ("localhost:0", ListenAddress("localhost", 0)),
])
def test_listen_addresses(text: str, address: ListenAddress) -> None:
    assert parse_listen_address("--web.listen-address", text) == address


@pytest.mark.parametrize("text", ["9458", "host:", "host:port", ":70000", "::1:9458", ""])
def test_bad_listen_addresses_name_the_flag(text: str) -> None:
    with pytest.raises(InputError, match=r"^--web\.listen-address: "):
        parse_listen_address("--web.listen-address", text)


def test_url_hosts() -> None:
    assert ListenAddress("", 1).url_host() == "localhost"
    assert ListenAddress("::1", 1).url_host() == "[::1]"
    assert ListenAddress("10.0.0.1", 1).url_host() == "10.0.0.1"


def test_counts_and_paths() -> None:
    assert parse_count("--web.max-requests", "0") == 0
    with pytest.raises(InputError, match=r"^--web\.max-requests: '-1'"):
        parse_count("--web.max-requests", "-1")
    assert parse_telemetry_path("--web.telemetry-path", "/gpu/metrics") == "/gpu/metrics"
    for bad in ("metrics", "/", "/health", "/a b", "/metrics?x=1", "/metrics#top"):
        with pytest.raises(InputError, match=r"^--web\.telemetry-path: "):
            parse_telemetry_path("--web.telemetry-path", bad)
