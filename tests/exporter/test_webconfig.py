"""The exporter-toolkit web config: what it accepts, and one-line refusals naming file and key."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import bcrypt
import pytest

from mig_exporter.errors import InputError
from mig_exporter.exporter.webconfig import BasicAuth, load_web_config

from .certificates import self_signed

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return str(path)


def test_tls_and_basic_auth_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    self_signed(tmp_path, "server")
    config = load_web_config(write(tmp_path, f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  min_version: TLS12
basic_auth_users:
  prometheus: {HASH}
"""))
    assert config.ssl_context is not None and config.ssl_context.verify_mode == ssl.CERT_NONE
    assert config.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.basic_auth is not None


def test_client_certificates_are_verified_against_the_ca_file(tmp_path: Path) -> None:
    self_signed(tmp_path, "server")
    self_signed(tmp_path, "clients")
    config = load_web_config(write(tmp_path, """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: clients.crt
"""))
    assert config.ssl_context is not None and config.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_an_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, ""))
    assert config.ssl_context is None and config.basic_auth is None


@pytest.mark.parametrize(("text", "message"), [
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
     r"tls_server_config\.cert_file/key_file: cannot load .*missing\.crt"),
    ("tls_server_config:\n  key_file: server.key\n", r"tls_server_config\.cert_file: missing"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: Bogus\n",
     r"tls_server_config\.client_auth_type: 'Bogus' is not supported"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  client_auth_type: RequireAndVerifyClientCert\n", r"tls_server_config\.client_ca_file: missing"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS14\n",
     r"tls_server_config\.min_version: 'TLS14' is not one of"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [x]\n",
     r"tls_server_config\.cipher_suites: unknown or unsupported key"),
    ("http_server_config:\n  http2: true\n", r"http_server_config: unknown or unsupported key"),
    ("basic_auth_users:\n  prometheus: plaintext\n", r"basic_auth_users\.prometheus: not a bcrypt hash"),
    ("basic_auth_users: [a, b]\n", r"basic_auth_users: expected a mapping"),
    ("tls_server_config: [\n", r"not valid YAML"),
    ("- a list\n", r"the file: expected a mapping"),
    ("root:$6$salt$secrethash:19000:0:99999:7:::\n", r"\(not a key name\): unknown or unsupported key"),
])
def test_bad_configs_are_refused_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    self_signed(tmp_path, "server")
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=rf"^{path}: {message}") as refused:
        load_web_config(path)
    assert "\n" not in str(refused.value)


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.yml: cannot read the web config"):
        load_web_config(str(tmp_path / "nope.yml"))


def test_basic_auth_checks_user_and_password() -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert auth.allows(basic("prometheus", "s3cret"))
    assert auth.allows(basic("prometheus", "s3cret"))  # remembered
    assert not auth.allows(basic("prometheus", "wrong"))
    assert not auth.allows(basic("someone", "s3cret"))
    assert not auth.allows(None)
    assert not auth.allows("Bearer token")
    assert not auth.allows("Basic !!!")
    assert not auth.allows("Basic " + base64.b64encode(b"no-colon").decode())


def test_passwords_are_compared_on_their_first_72_bytes_as_bcrypt_hashes_them() -> None:
    """bcrypt 5 raises on longer passwords; a scraper sending one gets 401, not a dropped connection."""
    long_password = "p" * 72
    auth = BasicAuth({"prometheus": bcrypt.hashpw(long_password.encode(), bcrypt.gensalt(rounds=4))})
    assert auth.allows(basic("prometheus", long_password + "ignored"))
    assert not auth.allows(basic("prometheus", "q" * 100))
    assert not auth.allows(basic("someone", "q" * 100))
