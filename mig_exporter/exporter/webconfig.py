"""``--web.config.file``: the Prometheus exporter-toolkit web configuration (TLS, basic auth).

Operators already write this file for node_exporter; accepting the same keys with the same
meaning lets them reuse it. Everything is checked at start (the certificate and key are loaded,
every bcrypt hash is parsed), and a key this exporter cannot honour is refused rather than
ignored, because a silently ignored security setting is worse than a refusal.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt

from mig_exporter.errors import InputError, read_yaml_file, shown_key

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Python verifies every client certificate it asks for, so the toolkit's two modes that accept
# an unverified certificate (RequestClientCert, RequireAnyClientCert) cannot be honoured.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users"}
# Hash of a random password: checked for unknown users so that a wrong user name takes as long
# as a wrong password and response times do not reveal which users exist.
_DECOY_HASH = b"$2b$10$oQsh3TIzweGsBRpDm6ic2u3srYRxAvO0FrSnvS8GZ6l3eF7vWt5Gu"
_MAX_REMEMBERED = 1024
_BCRYPT_MAX_BYTES = 72


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds), and Prometheus sends the same credentials on
    every scrape, so verified credentials are remembered by a SHA-256 digest (never in clear),
    as exporter-toolkit does.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def allows(self, authorization: str | None) -> bool:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        digest = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b""))).digest()
        with self._lock:
            if digest in self._verified:
                return True
        # bcrypt only ever hashes the first 72 bytes (htpasswd and Go's bcrypt cut there too);
        # bcrypt 5 raises instead of cutting, which would drop the connection without an answer.
        if not bcrypt.checkpw(password[:_BCRYPT_MAX_BYTES], hashed or _DECOY_HASH) or hashed is None:
            return False
        with self._lock:
            if len(self._verified) >= _MAX_REMEMBERED:
                self._verified.clear()
            self._verified.add(digest)
        return True


def _basic_credentials(authorization: str | None) -> tuple[str, bytes] | None:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, separator, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        return (user.decode(), password) if separator else None
    except (binascii.Error, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    basic_auth: BasicAuth | None = None


def load_web_config(path: str) -> WebConfig:
    """Read and check the file; raise ``InputError`` naming the file, the key and the reason."""
    document = read_yaml_file(path, unreadable=f"{path}: cannot read the web config")
    document = {} if document is None else document
    _check_mapping(path, "", document, _TOP_KEYS)
    base = Path(path).parent
    tls = document.get("tls_server_config")
    users = document.get("basic_auth_users")
    return WebConfig(
        ssl_context=None if tls is None else _ssl_context(path, base, tls),
        basic_auth=None if users is None else BasicAuth(_bcrypt_users(path, users)),
    )


def _check_mapping(path: str, where: str, value: Any, allowed: set[str]) -> None:
    if not isinstance(value, dict):
        raise InputError(f"{path}: {where or 'the file'}: expected a mapping of keys")
    for key in value:
        if key not in allowed:
            where_key = f"{where}.{shown_key(key)}" if where else shown_key(key)
            raise InputError(f"{path}: {where_key}: unknown or unsupported key "
                             f"(supported: {', '.join(sorted(allowed))})")


def _ssl_context(path: str, base: Path, tls: Any) -> ssl.SSLContext:
    _check_mapping(path, "tls_server_config", tls, _TLS_KEYS)

    def setting(key: str, default: str | None = None) -> str | None:
        value = tls.get(key, default)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{path}: tls_server_config.{key}: expected a string")
        return value

    def file(key: str) -> str:
        value = setting(key)
        if not value:
            raise InputError(f"{path}: tls_server_config.{key}: missing")
        return str(base / value)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert_file, key_file = file("cert_file"), file("key_file")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as error:
        raise InputError(f"{path}: tls_server_config.cert_file/key_file: cannot load {cert_file} "
                         f"with {key_file}: {error.strerror or error}") from None
    for key, attribute in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        name = setting(key)
        if name is not None:
            if name not in _TLS_VERSIONS:
                raise InputError(f"{path}: tls_server_config.{key}: {name!r} is not one of "
                                 f"{', '.join(_TLS_VERSIONS)}")
            setattr(context, attribute, _TLS_VERSIONS[name])
    client_auth = setting("client_auth_type", "NoClientCert") or "NoClientCert"
    if client_auth not in _CLIENT_AUTH:
        raise InputError(f"{path}: tls_server_config.client_auth_type: {client_auth!r} is not supported "
                         f"(supported: {', '.join(_CLIENT_AUTH)})")
    context.verify_mode = _CLIENT_AUTH[client_auth]
    if context.verify_mode != ssl.CERT_NONE:
        ca_file = file("client_ca_file")
        try:
            context.load_verify_locations(ca_file)
        except (OSError, ssl.SSLError) as error:
            raise InputError(f"{path}: tls_server_config.client_ca_file: cannot load {ca_file}: "
                             f"{error.strerror or error}") from None
    return context


def _bcrypt_users(path: str, users: Any) -> dict[str, bytes]:
    if not isinstance(users, dict):
        raise InputError(f"{path}: basic_auth_users: expected a mapping of user: bcrypt hash")
    checked = {}
    for user, hashed in users.items():
        try:
            bcrypt.checkpw(b"", str(hashed).encode())
        except ValueError:
            raise InputError(f"{path}: basic_auth_users.{user}: not a bcrypt hash "
                             f"(make one with: htpasswd -nBC 10 '' | tr -d ':')") from None
        checked[str(user)] = str(hashed).encode()
    return checked
