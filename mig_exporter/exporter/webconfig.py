"""``--web.config.file``: the Prometheus exporter-toolkit web configuration (TLS, basic auth,
response headers).

Operators already write this file for node_exporter; accepting the same keys with the same
meaning lets them reuse it. Everything is checked at start (the certificate and key are loaded,
every bcrypt hash is parsed, the TLS versions leave a usable range), and a key this exporter
cannot honour is refused rather than ignored, because a silently ignored security setting is
worse than a refusal. What is accepted but unwise (hashes anyone on the host can read, passwords
sent in clear) is said in ``warnings``, logged at start.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mig_exporter.errors import InputError, read_yaml_file, shown_key
from mig_exporter.exporter.basicauth import BasicAuth, checked_users
from mig_exporter.exporter.tls import CLIENT_AUTH, TLS_VERSIONS, ServerTls, TlsSettings, check_versions

_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
_HTTP_KEYS = {"headers", "http2"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
# exporter-toolkit's own list (web/handler.go), kept private there "to ensure consistency in the
# Prometheus ecosystem": the headers that may be set, and the values allowed where they are few.
_RESPONSE_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}


@dataclass(frozen=True)
class WebConfig:
    tls: ServerTls | None = None
    basic_auth: BasicAuth | None = None
    response_headers: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context a new connection gets now (reloaded if the files changed)."""
        return None if self.tls is None else self.tls.context()


def load_web_config(path: str) -> WebConfig:
    """Read and check the file; raise ``InputError`` naming the file, the key and the reason."""
    document = read_yaml_file(path, unreadable=f"{path}: cannot read the web config")
    document = {} if document is None else document
    _check_mapping(path, "", document, _TOP_KEYS)
    tls = document.get("tls_server_config")
    users = document.get("basic_auth_users")
    http = document.get("http_server_config")
    config = WebConfig(
        tls=None if tls is None else ServerTls(_tls_settings(path, tls)),
        basic_auth=None if users is None else BasicAuth(checked_users(path, users)),
        response_headers={} if http is None else _response_headers(path, http),
    )
    warnings = []
    if config.basic_auth is not None and config.tls is None:
        warnings.append(f"{path}: basic_auth_users without tls_server_config: passwords cross the "
                        "network in clear")
    if config.basic_auth is not None and os.stat(path).st_mode & 0o004:
        warnings.append(f"{path}: readable by every user of this host, and it holds password hashes "
                        f"(chmod o-r {path})")
    if http is not None and http.get("http2") is True:
        warnings.append(f"{path}: http_server_config.http2: true, but HTTP/2 is not served: this exporter "
                        "answers HTTP/1.1 only (its TLS offers only http/1.1), which Prometheus and other "
                        "HTTP/2 clients fall back to; write http2: false to say so")
    return WebConfig(config.tls, config.basic_auth, config.response_headers, tuple(warnings))


def _check_mapping(path: str, where: str, value: Any, allowed: set[str]) -> None:
    if not isinstance(value, dict):
        raise InputError(f"{path}: {where or 'the file'}: expected a mapping of keys")
    for key in value:
        if key not in allowed:
            where_key = f"{where}.{shown_key(key)}" if where else shown_key(key)
            raise InputError(f"{path}: {where_key}: unknown or unsupported key "
                             f"(supported: {', '.join(sorted(allowed))})")


def _tls_settings(path: str, tls: Any) -> TlsSettings:
    _check_mapping(path, "tls_server_config", tls, _TLS_KEYS)
    base = Path(path).parent

    def setting(key: str) -> str | None:
        value = tls.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{path}: tls_server_config.{key}: expected a string")
        return value

    def file(key: str) -> str:
        value = setting(key)
        if not value:
            raise InputError(f"{path}: tls_server_config.{key}: missing")
        return str(base / value)

    def version(key: str) -> ssl.TLSVersion | None:
        name = setting(key)
        if name is not None and name not in TLS_VERSIONS:
            raise InputError(f"{path}: tls_server_config.{key}: {name!r} is not one of "
                             f"{', '.join(TLS_VERSIONS)}")
        return None if name is None else TLS_VERSIONS[name]

    client_auth = setting("client_auth_type") or "NoClientCert"
    if client_auth not in CLIENT_AUTH:
        raise InputError(f"{path}: tls_server_config.client_auth_type: {client_auth!r} is not supported "
                         f"(supported: {', '.join(CLIENT_AUTH)})")
    verify_mode = CLIENT_AUTH[client_auth]
    minimum, maximum = version("min_version"), version("max_version")
    check_versions(path, minimum, maximum)
    return TlsSettings(
        where=path, cert_file=file("cert_file"), key_file=file("key_file"), verify_mode=verify_mode,
        client_ca_file=file("client_ca_file") if verify_mode != ssl.CERT_NONE else None,
        min_version=minimum, max_version=maximum,
    )


def _response_headers(path: str, http: Any) -> dict[str, str]:
    """``http_server_config.headers`` as exporter-toolkit checks them. ``http2`` is accepted, as a
    boolean, so that a node_exporter web config loads unchanged: this server answers HTTP/1.1 only
    (docs/reliability.md says why), which is what ``http2: false`` asks and what an HTTP/2 client
    falls back to through ALPN. An explicit ``http2: true`` is warned about at start."""
    _check_mapping(path, "http_server_config", http, _HTTP_KEYS)
    if not isinstance(http.get("http2", True), bool):
        raise InputError(f"{path}: http_server_config.http2: expected true or false")
    headers = http.get("headers") or {}
    _check_mapping(path, "http_server_config.headers", headers, set(_RESPONSE_HEADERS))
    for name, value in headers.items():
        allowed = _RESPONSE_HEADERS[name]
        if not isinstance(value, str) or (allowed and value not in allowed) or "\n" in value or "\r" in value:
            expected = f"one of {', '.join(allowed)}" if allowed else "a one-line string"
            raise InputError(f"{path}: http_server_config.headers.{name}: expected {expected}")
    return dict(headers)
