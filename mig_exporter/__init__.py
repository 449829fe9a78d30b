"""mig-exporter: see GPUs shared without isolation, page on it, and partition them with MIG."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mig-exporter")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
