"""The exporter-toolkit web config: what it accepts, and one-line refusals naming file and key."""

from __future__ import annotations

import base64
import os
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
    ("http_server_config:\n  http2: 1\n", r"http_server_config\.http2: expected true or false"),
    ("http_server_config:\n  headers:\n    X-Powered-By: me\n",
     r"http_server_config\.headers\.X-Powered-By: unknown or unsupported key"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
     r"http_server_config\.headers\.X-Frame-Options: expected one of deny, sameorigin"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  min_version: TLS13\n  max_version: TLS12\n", r"tls_server_config\.min_version is above max_version"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  max_version: TLS11\n",
     r"tls_server_config\.max_version: TLS 1\.0 and 1\.1 are refused"),
    (f"basic_auth_users:\n  prometheus: {HASH.replace('$04$', '$31$')}\n",
     r"basic_auth_users\.prometheus: bcrypt cost 31 is outside 4-14"),
    (f"basic_auth_users:\n  'team:prometheus': {HASH}\n",
     r"basic_auth_users: a user name cannot contain ':'"),
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


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8\n", b"x" * (1024 * 1024 + 1)])
def test_a_file_that_is_not_small_utf8_text_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=rf"^{path}: cannot read the web config: (not UTF-8|larger than)"):
        load_web_config(str(path))


def test_devices_and_fifos_are_refused_without_reading_or_blocking(tmp_path: Path) -> None:
    """/dev/zero grew RSS past 3 GB and a FIFO blocked forever: neither is a regular file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        with pytest.raises(InputError, match=r"cannot read the web config: not a regular file$"):
            load_web_config(path)


def test_warnings_for_readable_hashes_and_passwords_in_clear(tmp_path: Path) -> None:
    path = write(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")
    os.chmod(path, 0o644)
    warnings = load_web_config(path).warnings
    assert any("passwords cross the network in clear" in w for w in warnings)
    assert any("readable by every user" in w for w in warnings)
    os.chmod(path, 0o600)
    self_signed(tmp_path, "server")
    tls = write(tmp_path, f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                          f"basic_auth_users:\n  prometheus: {HASH}\n")
    os.chmod(tls, 0o600)
    assert load_web_config(tls).warnings == ()


def test_response_headers_from_http_server_config(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, "http_server_config:\n  http2: false\n  headers:\n"
                                             "    X-Frame-Options: deny\n    Content-Security-Policy: x\n"))
    assert config.response_headers == {"X-Frame-Options": "deny", "Content-Security-Policy": "x"}


@pytest.mark.parametrize(("http2", "warned"), [("true", True), ("false", False), (None, False)])
def test_an_explicit_http2_true_is_warned_about_as_not_served(
        tmp_path: Path, http2: str | None, warned: bool) -> None:
    """exporter-toolkit serves HTTP/2 over TLS under http2: true (its default); this server does
    not, so asking for it explicitly is said once at start rather than silently ignored."""
    lines = "http_server_config:\n" + (f"  http2: {http2}\n" if http2 else "  headers: {}\n")
    warnings = load_web_config(write(tmp_path, lines)).warnings
    about_http2 = [w for w in warnings if "http2" in w]
    assert len(about_http2) == (1 if warned else 0) and len(warnings) == len(about_http2)
    if warned:
        assert "HTTP/2 is not served" in about_http2[0] and "HTTP/1.1 only" in about_http2[0]


def test_wrong_user_and_wrong_password_cost_the_same_bcrypt_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users of cost 4 and 6: every failed check costs 2**6 units (a check at cost c is 2**c),
    so response times do not tell a known user from an unknown one."""
    from mig_exporter.exporter import basicauth
    work: list[int] = []
    real = basicauth.bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        work.append(2 ** int(hashed[4:6]))
        return real(password, hashed)

    auth = BasicAuth({"cheap": bcrypt.hashpw(b"a", bcrypt.gensalt(4)),
                      "dear": bcrypt.hashpw(b"b", bcrypt.gensalt(6))})
    monkeypatch.setattr(basicauth.bcrypt, "checkpw", counted)
    costs = {}
    for user in ("cheap", "dear", "nobody"):
        work.clear()
        assert not auth.allows(basic(user, "wrong"))
        costs[user] = sum(work)
    assert costs == {"cheap": 64, "dear": 64, "nobody": 64}
    work.clear()
    assert auth.allows(basic("cheap", "a")) and sum(work) == 16


def test_the_certificate_is_reloaded_when_its_files_change(tmp_path: Path) -> None:
    """cert-manager rewrites the files in place: the next connection gets the new certificate."""
    certificate = self_signed(tmp_path, "server")
    config = load_web_config(write(tmp_path, "tls_server_config:\n  cert_file: server.crt\n"
                                             "  key_file: server.key\n"))
    before = config.ssl_context
    assert before is not None and config.ssl_context is before  # unchanged files: the same context
    self_signed(tmp_path, "server")
    later = os.stat(certificate.cert_file).st_mtime_ns + 10**9  # a clock tick apart, whatever the fs
    os.utime(certificate.cert_file, ns=(later, later))
    assert config.ssl_context is not before
    certificate.key_file.write_text("half-written rotation\n")
    os.utime(certificate.key_file, ns=(later + 1, later + 1))
    assert config.ssl_context is not None  # a bad pair keeps the last good context
