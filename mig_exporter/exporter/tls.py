"""``tls_server_config`` of the web config: the server's TLS context, re-read when its files change.

exporter-toolkit reads the certificate and key again for every new connection, which is what
lets cert-manager (or any rotation that rewrites the files, or swaps a Secret volume's symlink)
renew a certificate without a restart. Here each new connection compares the files' inode, size
and modification time with those of the loaded context and loads them again when they differ: the
same effect, without reading and parsing the files on every connection. A rotation caught half
way (a new certificate with the old key) keeps the previous context and logs a warning; the
next connection after the files settle picks up the new pair.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass

from mig_exporter.errors import InputError

log = logging.getLogger(__name__)

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Python verifies every client certificate it asks for, so the toolkit's two modes that accept
# an unverified certificate (RequestClientCert, RequireAnyClientCert) cannot be honoured.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class TlsSettings:
    """What the web config says; ``where`` names the file in every error."""

    where: str
    cert_file: str
    key_file: str
    verify_mode: ssl.VerifyMode = ssl.CERT_NONE
    client_ca_file: str | None = None
    min_version: ssl.TLSVersion | None = None
    max_version: ssl.TLSVersion | None = None


class ServerTls:
    """Loads the context at construction (``InputError`` if it cannot), then on file changes."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self._signature = self._files_signature()
        self._context = build_context(settings)

    def context(self) -> ssl.SSLContext:
        """The context for a new connection, reloaded first if a file changed since the last load."""
        signature = self._files_signature()
        if signature != self._signature:
            self._signature = signature  # a failed reload is logged once per change, not per connection
            try:
                self._context = build_context(self.settings)
                log.info("%s: reloaded the TLS certificate and key", self.settings.where)
            except InputError as error:
                log.warning("%s; still serving the certificate loaded before", error)
        return self._context

    def _files_signature(self) -> tuple[tuple[int, int, int] | None, ...]:
        files = (self.settings.cert_file, self.settings.key_file, self.settings.client_ca_file)
        return tuple(_file_signature(file) for file in files if file)


def _file_signature(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def build_context(settings: TlsSettings) -> ssl.SSLContext:
    where = f"{settings.where}: tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as error:
        raise InputError(f"{where}.cert_file/key_file: cannot load {settings.cert_file} "
                         f"with {settings.key_file}: {error.strerror or error}") from None
    if settings.min_version is not None:
        context.minimum_version = settings.min_version
    if settings.max_version is not None:
        context.maximum_version = settings.max_version
    # HTTP/1.1 is all this server speaks, whatever http_server_config.http2 says (webconfig warns
    # about http2: true); offering only it lets an HTTP/2-first client (Prometheus) settle at once.
    context.set_alpn_protocols(["http/1.1"])
    context.verify_mode = settings.verify_mode
    if settings.client_ca_file is not None:
        try:
            context.load_verify_locations(settings.client_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise InputError(f"{where}.client_ca_file: cannot load {settings.client_ca_file}: "
                             f"{error.strerror or error}") from None
    return context


def check_versions(where: str, minimum: ssl.TLSVersion | None, maximum: ssl.TLSVersion | None) -> None:
    """Refuse the version ranges no handshake can succeed in, at start rather than per connection."""
    if minimum is not None and maximum is not None and minimum > maximum:
        raise InputError(f"{where}: tls_server_config.min_version is above max_version: "
                         "no TLS version is left to use")
    if maximum is not None and maximum < ssl.TLSVersion.TLSv1_2:
        raise InputError(f"{where}: tls_server_config.max_version: TLS 1.0 and 1.1 are refused by "
                         "this system's OpenSSL, so no client could connect (use TLS12 or TLS13)")
