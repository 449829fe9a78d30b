"""The running exporter: collection job, scheduler and HTTP server over one NVML session,
started and stopped together (``serve`` runs it until a signal; tests run it in-process)."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler

from mig_exporter.exporter.collector import DEFAULT_MAX_PROCESS_SERIES, ExporterSettings
from mig_exporter.exporter.connection import DEFAULT_MAX_CONNECTIONS, ServerLimits
from mig_exporter.exporter.flags import ListenAddress
from mig_exporter.exporter.schedule import CollectionJob, start_collecting
from mig_exporter.exporter.server import ExporterHTTPServer
from mig_exporter.exporter.state import ExporterState
from mig_exporter.exporter.webconfig import WebConfig
from mig_exporter.kubelet.podresources import DEFAULT_SOCKET, ERROR_CALL, PodResourcesPoller
from mig_exporter.model import Snapshot
from mig_exporter.nvml.events import XidWatcher
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession

DEFAULT_MAX_REQUESTS = 40  # node_exporter's default for --web.max-requests
# The GPUs' reads get this much of --collect.timeout; a GPU not done by then is served stale,
# which leaves the rest for process names and rendering, so the collection still publishes.
GPU_READS_SHARE_OF_TIMEOUT = 0.8
# How long a thread waiting for the GIL waits before the running one must hand it over (CPython's
# default is 5 ms). The HTTP event loop gives the GIL up at every system call (a scrape makes
# several) and, while a collection renders on another thread, waited that long to get it back each
# time: with 10,000 processes (a collection of 0.6 s of CPU every 5 s) a scrape's p99 went from
# 79-80 ms at 5 ms to 34-63 ms at 0.5 ms (bench_exporter.py, docs/benchmarks.md).
SWITCH_INTERVAL_SECONDS = 0.0005


@dataclass(frozen=True)
class ServeConfig:
    listen_address: ListenAddress
    interval_seconds: float
    timeout_seconds: float
    telemetry_path: str = "/metrics"
    web_config: WebConfig | None = None
    max_process_series: int | None = DEFAULT_MAX_PROCESS_SERIES  # None: no cap (the flag's 0)
    max_requests: int = DEFAULT_MAX_REQUESTS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    pod_resources_socket: str = DEFAULT_SOCKET  # "" asks no kubelet


class Exporter:
    """Binds the listen address on construction (so a busy port fails before anything runs)."""

    def __init__(self, session: NvmlSession, config: ServeConfig) -> None:
        self.config = config
        self.pod_resources: PodResourcesPoller | None = None
        if config.pod_resources_socket:
            self.pod_resources = PodResourcesPoller(config.pod_resources_socket, config.interval_seconds,
                                                    on_error=lambda: self.state.record_error(ERROR_CALL))
        self.state = ExporterState(ExporterSettings(config.interval_seconds, config.max_process_series),
                                   self.pod_resources.allocations if self.pod_resources else dict)
        self.xid_watcher = XidWatcher(on_error=self.state.record_error)
        # a GPM window spans one interval: never refuse one for being as long as the interval
        session.gpm_samples.ceiling_seconds = max(session.gpm_samples.ceiling_seconds,
                                                  3 * config.interval_seconds)
        gpu_timeout = config.timeout_seconds * GPU_READS_SHARE_OF_TIMEOUT

        def read() -> Snapshot:
            snapshot = read_snapshot(session, config.max_process_series, gpu_timeout)
            return self.xid_watcher.with_xid_errors(snapshot)

        self.job = CollectionJob(read, self.state, config.timeout_seconds)
        self.server = ExporterHTTPServer(config.listen_address, self.state, config.telemetry_path,
                                         config.web_config, config.max_requests,
                                         ServerLimits(max_connections=config.max_connections))
        self._scheduler: BackgroundScheduler | None = None
        self._server_thread: threading.Thread | None = None
        self._switch_interval_before: float | None = None

    def start(self) -> None:
        self._switch_interval_before = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        self._server_thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._server_thread.start()
        if self.pod_resources is not None:
            self.pod_resources.start()
        self.xid_watcher.start()
        self._scheduler = start_collecting(self.job, self.config.interval_seconds)

    def stop(self) -> None:
        """Stop collecting and serving. A hung NVML read is left to its daemon thread."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self.pod_resources is not None:
            self.pod_resources.stop()
        self.xid_watcher.stop()
        if self._server_thread is not None:
            self.server.shutdown()
        self.server.server_close()
        if self._switch_interval_before is not None:
            sys.setswitchinterval(self._switch_interval_before)
