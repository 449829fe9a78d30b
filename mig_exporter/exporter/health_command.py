"""``mig-exporter health``: asks a running exporter's ``/health``, for Docker's HEALTHCHECK and
Kubernetes exec probes.

A probe of its own because an HTTP probe cannot follow the exporter's settings: Docker's
HEALTHCHECK is fixed in the image whatever ``--web.listen-address`` the container is started
with, and Kubernetes' httpGet probe can speak TLS but can only send basic auth as a password
written into the manifest. This command reads the same flags and web config as ``serve`` (in a
container, from the ``serve`` process that is PID 1 when it is given none), and takes the
password from a file, such as a mounted Secret.

Exit 0 healthy (the body of ``/health`` on stdout), 1 unhealthy or unreachable (why, on stderr),
2 bad input.
"""

from __future__ import annotations

import argparse
import base64
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from mig_exporter.errors import InputError
from mig_exporter.exporter.flags import ListenAddress, parse_duration, parse_listen_address
from mig_exporter.exporter.routes import HEALTH_PATH
from mig_exporter.exporter.webconfig import load_web_config

EXIT_UNHEALTHY = 1
USERNAME_ENV = "MIG_EXPORTER_HEALTH_USERNAME"
PASSWORD_FILE_ENV = "MIG_EXPORTER_HEALTH_PASSWORD_FILE"
_DEFAULT_LISTEN_ADDRESS = ":9458"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "health", help="ask a running exporter's /health (for HEALTHCHECK and exec probes)",
        description="Ask a running exporter's /health, speaking TLS and basic auth as its web config "
                    "says. Without --web.listen-address and --web.config.file, they are read from the "
                    "`mig-exporter serve` that is PID 1 (a container), else :9458 over plain HTTP. "
                    "Exit 0 healthy, 1 unhealthy or unreachable, 2 bad input.",
    )
    parser.add_argument("--web.listen-address", dest="listen_address", metavar="ADDR",
                        help="the exporter's --web.listen-address; every interface is asked on loopback")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="the exporter's web config: https when it has tls_server_config")
    parser.add_argument("--auth.username", dest="username", default=os.environ.get(USERNAME_ENV),
                        metavar="USER", help=f"basic auth user (default ${USERNAME_ENV})")
    parser.add_argument("--auth.password-file", dest="password_file",
                        default=os.environ.get(PASSWORD_FILE_ENV), metavar="FILE",
                        help=f"file holding that user's password (default ${PASSWORD_FILE_ENV})")
    parser.add_argument("--tls.client-cert-file", dest="client_cert_file", metavar="FILE",
                        help="client certificate, when the web config requires one")
    parser.add_argument("--tls.client-key-file", dest="client_key_file", metavar="FILE",
                        help="its key")
    parser.add_argument("--timeout", default="5s", metavar="DURATION", help="default 5s")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Probe:
    url: str
    ssl_context: ssl.SSLContext | None
    authorization: str | None
    timeout_seconds: float


def run(args: argparse.Namespace) -> int:
    probe = build_probe(args, pid1_cmdline())
    request = urllib.request.Request(probe.url)
    if probe.authorization:
        request.add_header("Authorization", probe.authorization)
    try:
        with urllib.request.urlopen(request, timeout=probe.timeout_seconds,
                                    context=probe.ssl_context) as reply:
            sys.stdout.write(reply.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace").strip() or error.reason
        print(f"mig-exporter health: unhealthy: {probe.url} answered {error.code}: {body}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        cause = error.reason if isinstance(error, urllib.error.URLError) else error
        print(f"mig-exporter health: unhealthy: cannot reach {probe.url}: {cause}", file=sys.stderr)
    return EXIT_UNHEALTHY


def build_probe(args: argparse.Namespace, pid1: Sequence[str]) -> Probe:
    """Everything checked before the request, or ``InputError`` naming the bad flag or file."""
    listen_address, web_config_file = args.listen_address, args.web_config_file
    if listen_address is None and web_config_file is None:
        listen_address, web_config_file = serve_settings(pid1)
    address = parse_listen_address("--web.listen-address", listen_address or _DEFAULT_LISTEN_ADDRESS)
    web_config = None if web_config_file is None else load_web_config(web_config_file)
    tls = web_config is not None and web_config.ssl_context is not None
    needs_auth = web_config is not None and web_config.basic_auth is not None
    authorization = None
    if needs_auth:
        if not args.username or not args.password_file:
            raise InputError(f"{web_config_file}: basic_auth_users is set: give --auth.username and "
                             f"--auth.password-file (or ${USERNAME_ENV} and ${PASSWORD_FILE_ENV})")
        authorization = _basic(args.username, _password(args.password_file))
    return Probe(
        url=f"{'https' if tls else 'http'}://{_loopback(address)}:{address.port}{HEALTH_PATH}",
        ssl_context=_client_context(args) if tls else None,
        authorization=authorization,
        timeout_seconds=parse_duration("--timeout", args.timeout),
    )


def pid1_cmdline() -> list[str]:
    try:
        return list(psutil.Process(1).cmdline())
    except psutil.Error:
        return []


def serve_settings(cmdline: Sequence[str]) -> tuple[str | None, str | None]:
    """The listen address and web config of ``mig-exporter serve`` in ``cmdline`` (a console
    script runs as ``python …/mig-exporter serve …``); ``(None, None)`` for any other command."""
    for i, part in enumerate(cmdline):
        if os.path.basename(part) == "mig-exporter" and list(cmdline[i + 1:i + 2]) == ["serve"]:
            parser = argparse.ArgumentParser(add_help=False)
            parser.add_argument("--web.listen-address", dest="listen_address")
            parser.add_argument("--web.config.file", dest="web_config_file")
            known, _ = parser.parse_known_args(list(cmdline[i + 2:]))
            return known.listen_address, known.web_config_file
    return None, None


def _loopback(address: ListenAddress) -> str:
    """Every interface is asked on loopback (the probe runs beside the exporter)."""
    if address.host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address.host == "::":
        return "[::1]"
    return address.url_host()


def _client_context(args: argparse.Namespace) -> ssl.SSLContext:
    """TLS without checking the server's certificate: the probe talks to the exporter beside it,
    whose certificate names the node, not loopback."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if args.client_cert_file:
        try:
            context.load_cert_chain(args.client_cert_file, args.client_key_file)
        except (OSError, ssl.SSLError) as error:
            raise InputError(f"--tls.client-cert-file: cannot load {args.client_cert_file}: "
                             f"{getattr(error, 'strerror', None) or error}") from None
    return context


def _password(path: str) -> str:
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as error:
        raise InputError(f"--auth.password-file: cannot read {path}: {error.strerror}") from None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
