"""``mig-exporter serve``: the Prometheus exporter, with node_exporter's flag names.

Every flag value is checked before NVML is opened, and every failure to start (a bad flag, no
driver, a busy port, a bad web config) is one line and exit status 2. SIGTERM, SIGINT and SIGHUP
(the terminal gone) stop the scheduler and the server and shut NVML down, then exit 0; a signal
the parent ignores (SIGHUP under ``nohup``, SIGINT for a shell's background job) stays ignored.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from mig_exporter.errors import InputError
from mig_exporter.exporter.collector import DEFAULT_MAX_PROCESS_SERIES
from mig_exporter.exporter.connection import DEFAULT_MAX_CONNECTIONS
from mig_exporter.exporter.flags import (
    parse_count,
    parse_duration,
    parse_limit,
    parse_listen_address,
    parse_telemetry_path,
)
from mig_exporter.exporter.logs import FORMATS, LEVELS, configure_logging
from mig_exporter.exporter.service import DEFAULT_MAX_REQUESTS, Exporter, ServeConfig
from mig_exporter.exporter.webconfig import load_web_config
from mig_exporter.host import nvml_session
from mig_exporter.kubelet.podresources import DEFAULT_SOCKET
from mig_exporter.nvml.session import NvmlSession, NvmlUnavailable
from mig_exporter.signals import handle_unless_ignored

log = logging.getLogger(__name__)

DEFAULT_LISTEN_ADDRESS = ":9458"  # not taken by dcgm-exporter (9400), 9445 or nvidia_gpu_exporter (9835)
MIN_INTERVAL_SECONDS = 0.1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve Prometheus metrics of the GPUs, MIG instances and processes",
        description="Serve Prometheus metrics read from NVML in the background; /metrics never calls NVML.",
    )
    parser.add_argument("--fleet", metavar="F", help="simulate NVML over a built-in fleet (see "
                                                     "`mig-exporter fleet list`) or else a fleet file")
    parser.add_argument("--web.listen-address", dest="listen_address", default=DEFAULT_LISTEN_ADDRESS,
                        metavar="ADDR", help=f"host:port or :port (default {DEFAULT_LISTEN_ADDRESS})")
    parser.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH",
                        help="path of the metrics (default /metrics)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="exporter-toolkit web config: tls_server_config, basic_auth_users, "
                             "http_server_config")
    parser.add_argument("--web.max-requests", dest="max_requests", default=str(DEFAULT_MAX_REQUESTS),
                        metavar="N", help=f"concurrent requests served; more get 503; 0 for no limit "
                                          f"(default {DEFAULT_MAX_REQUESTS})")
    parser.add_argument("--web.max-connections", dest="max_connections", default=str(DEFAULT_MAX_CONNECTIONS),
                        metavar="N", help="connections open at once, at least 1; at the cap an idle one "
                                          "is closed for a new one (never-answered ones first); lowered "
                                          "to fit the file descriptor limit. 0 is refused, not unlimited: "
                                          "unbounded connections let idle clients starve scrapers "
                                          f"(default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--collect.interval", dest="interval", default="5s", metavar="DURATION",
                        help="time between NVML collections, e.g. 500ms, 5s, 1m; at least 100ms (default 5s)")
    parser.add_argument("--collect.timeout", dest="timeout", default="10s", metavar="DURATION",
                        help="a collection taking longer is abandoned and the last one served; more than 0, "
                             "since a hung NVML call would otherwise stop collections for good (default 10s)")
    parser.add_argument("--collect.max-process-series", dest="max_process_series",
                        default=str(DEFAULT_MAX_PROCESS_SERIES), metavar="N",
                        help="cap on each per-process series family; 0 for no limit "
                             f"(default {DEFAULT_MAX_PROCESS_SERIES})")
    parser.add_argument("--kubernetes.pod-resources-socket", dest="pod_resources_socket",
                        default=DEFAULT_SOCKET, metavar="PATH",
                        help="the kubelet's pod-resources socket, asked for the pod of each GPU and MIG "
                             f"device when it exists; '' to never ask (default {DEFAULT_SOCKET})")
    parser.add_argument("--log.level", dest="log_level", default="info", metavar="LEVEL",
                        help=f"one of {', '.join(LEVELS)} (default info)")
    parser.add_argument("--log.format", dest="log_format", default="logfmt", metavar="FORMAT",
                        help=f"one of {', '.join(FORMATS)} (default logfmt)")
    parser.set_defaults(run=run)


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """Every flag checked, or ``InputError`` naming the first bad one."""
    if args.log_level not in LEVELS:
        raise InputError(f"--log.level: {args.log_level!r} is not one of {', '.join(LEVELS)}")
    if args.log_format not in FORMATS:
        raise InputError(f"--log.format: {args.log_format!r} is not one of {', '.join(FORMATS)}")
    return ServeConfig(
        listen_address=parse_listen_address("--web.listen-address", args.listen_address),
        telemetry_path=parse_telemetry_path("--web.telemetry-path", args.telemetry_path),
        web_config=None if args.web_config_file is None else load_web_config(args.web_config_file),
        max_requests=parse_count("--web.max-requests", args.max_requests),
        max_connections=_max_connections(args.max_connections),
        interval_seconds=_interval(args.interval),
        timeout_seconds=parse_duration("--collect.timeout", args.timeout,
                                       " (0 is not \"no timeout\": a hung NVML call would stop collections)"),
        max_process_series=parse_limit("--collect.max-process-series", args.max_process_series),
        pod_resources_socket=args.pod_resources_socket,
    )


def _interval(text: str) -> float:
    """Below ``MIN_INTERVAL_SECONDS`` every collection overlaps the next (1ms logged 1,862
    warnings in 4s); NVML reads of a full host take tens of milliseconds."""
    seconds = parse_duration("--collect.interval", text)
    if seconds < MIN_INTERVAL_SECONDS:
        raise InputError(f"--collect.interval: {text!r} is too short (at least 100ms)")
    return seconds


def _max_connections(text: str) -> int:
    """At least one. Not ``--web.max-requests``'s "0 is unlimited": a server with no cap on
    connections is what let 1,100 idle clients take every descriptor and starve the scrapers
    (issue 11), and the descriptor limit caps them anyway, so "unlimited" could not be honoured."""
    count = parse_count("--web.max-connections", text)
    if count < 1:
        raise InputError(f"--web.max-connections: {text!r}: at least 1 (0 would mean unbounded "
                         "connections, which let idle clients starve scrapers)")
    return count


def run(args: argparse.Namespace) -> int:
    config = serve_config(args)
    configure_logging(args.log_level, args.log_format)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    for warning in config.web_config.warnings if config.web_config else ():
        log.warning("%s", warning)
    session = nvml_session(args.fleet)
    exporter: Exporter | None = None
    try:
        _open_or_retry_later(session)
        exporter = Exporter(session, config)
        # a hang-up is a request to stop, which by default would kill it without nvmlShutdown
        handle_unless_ignored((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), request_stop)
        exporter.start()
        scheme = "https" if config.web_config and config.web_config.ssl_context else "http"
        log.info("listening on %s://%s:%d%s%s", scheme, config.listen_address.url_host(),
                 exporter.server.port, config.telemetry_path,
                 f" (simulated fleet {args.fleet})" if args.fleet else "")
        while not stop.wait(1.0):
            pass
        exporter.stop()
    finally:
        if exporter is not None and exporter.job.read_in_flight:
            log.warning("an NVML read is still hung; exiting without nvmlShutdown")
        else:
            session.close()
    return 0


def _open_or_retry_later(session: NvmlSession) -> None:
    """Without any NVIDIA library this is no GPU host: exit with the hint (DESIGN.md). Any other
    failure (kernel module not loaded yet at boot, no permission) may pass: serve ``nvml_up 0``
    and try again at every collection, so the NVML-down alert can fire instead of a crash loop."""
    try:
        session.open()
    except NvmlUnavailable as unavailable:
        if unavailable.driver_missing:
            raise
        log.warning("NVML is unavailable (%s): serving nvml_up 0 and trying again at every collection",
                    unavailable)
