"""``mig-exporter health`` against a real ``serve`` on a free loopback port: plain HTTP, TLS with
basic auth and client certificates, a 503 while NVML hangs, nothing listening, bad input; and the
settings it reads from the ``serve`` process that is PID 1 in a container."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt

from mig_exporter.exporter.health_command import serve_settings
from mig_exporter.sim import builtin_text

from .certificates import self_signed
from .test_serve_e2e import free_port, serve, wait_for


def health(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mig_exporter", "health", *flags],
                          capture_output=True, text=True, timeout=30, env=env)


def port_of(base_url: str) -> str:
    return base_url.rsplit(":", 1)[1]


def test_a_healthy_exporter_on_every_interface_is_asked_on_loopback() -> None:
    with serve("seed-incident") as served:
        result = health("--web.listen-address", f":{port_of(served.base_url)}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_nothing_listening_is_unhealthy_with_the_url_and_reason() -> None:
    port = free_port()
    result = health("--web.listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}/health" in result.stderr


def test_a_hung_nvml_read_turns_the_probe_unhealthy(tmp_path: Path) -> None:
    fleet = tmp_path / "hangs.yaml"
    fleet.write_text(builtin_text("seed-incident")
                     + "faults:\n  - {call: nvmlDeviceGetCount_v2, delay_seconds: 60, skip: 1}\n")
    with serve(str(fleet), "--collect.interval", "500ms", "--collect.timeout", "500ms") as served:
        wait_for(lambda: served.get("/health").status_code == 503, what="/health to turn 503")
        result = health("--web.listen-address", f"127.0.0.1:{port_of(served.base_url)}")
    assert result.returncode == 1
    assert "answered 503: no collection has finished for" in result.stderr


def test_tls_basic_auth_and_client_certificate_from_the_web_config(tmp_path: Path) -> None:
    certificate = self_signed(tmp_path, "server")  # its own CA: it verifies itself as a client cert
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                   "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n"
                   f"basic_auth_users:\n  prometheus: {hashed}\n")
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "wrong").write_text("guess\n")
    cert = ["--tls.client-cert-file", str(certificate.cert_file),
            "--tls.client-key-file", str(certificate.key_file)]
    with serve("seed-incident", "--web.config.file", str(web), scheme="https",
               verify=str(certificate.cert_file), auth=("prometheus", "s3cret"),
               cert=(str(certificate.cert_file), str(certificate.key_file))) as served:
        where = ["--web.listen-address", f"127.0.0.1:{port_of(served.base_url)}",
                 "--web.config.file", str(web)]
        good = health(*where, *cert, "--auth.username", "prometheus", "--auth.password-file",
                      str(tmp_path / "password"))
        wrong = health(*where, *cert, "--auth.username", "prometheus", "--auth.password-file",
                       str(tmp_path / "wrong"))
        without_cert = health(*where, "--auth.username", "prometheus", "--auth.password-file",
                              str(tmp_path / "password"))
        no_credentials = health(*where, *cert)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("ok")
    assert wrong.returncode == 1
    assert "answered 401" in wrong.stderr
    assert without_cert.returncode == 1
    assert "cannot reach https://" in without_cert.stderr
    assert no_credentials.returncode == 2
    assert no_credentials.stderr.count("\n") == 1
    assert "basic_auth_users is set: give --auth.username and --auth.password-file" in no_credentials.stderr


def test_credentials_from_the_environment_for_dockers_healthcheck(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  probe: {hashed}\n")
    (tmp_path / "password").write_text("s3cret")
    env = {"PATH": "/usr/bin:/bin", "MIG_EXPORTER_HEALTH_USERNAME": "probe",
           "MIG_EXPORTER_HEALTH_PASSWORD_FILE": str(tmp_path / "password")}
    with serve("seed-incident", "--web.config.file", str(web), auth=("probe", "s3cret")) as served:
        result = health("--web.listen-address", f"127.0.0.1:{port_of(served.base_url)}",
                        "--web.config.file", str(web), env=env)
    assert result.returncode == 0, result.stderr


def test_bad_input_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    for flags, message in [
        (["--web.listen-address", "9458"], "--web.listen-address: '9458' is not host:port"),
        (["--timeout", "soon"], "--timeout: 'soon' is not a duration"),
        (["--web.config.file", str(tmp_path / "missing.yml")], "missing.yml: cannot read the web config"),
    ]:
        result = health(*flags)
        assert result.returncode == 2, flags
        assert message in result.stderr
        assert result.stderr.count("\n") == 1


def test_settings_come_from_the_serve_process_of_a_container() -> None:
    """A console script runs as ``python /usr/local/bin/mig-exporter serve …`` (Dockerfile ENTRYPOINT)."""
    assert serve_settings(["/usr/local/bin/python3.12", "/usr/local/bin/mig-exporter", "serve",
                           "--web.listen-address", "[::1]:9999", "--collect.interval", "1s",
                           "--web.config.file", "/etc/mig-exporter/web.yml"]) == (
        "[::1]:9999", "/etc/mig-exporter/web.yml")
    assert serve_settings(["mig-exporter", "serve"]) == (None, None)
    # hostPID in Kubernetes: PID 1 is the node's init, and the probe passes its flags itself
    assert serve_settings(["/sbin/init", "splash"]) == (None, None)
    assert serve_settings(["/usr/local/bin/mig-exporter", "diagnose", "--web.listen-address", ":1"]) == (
        None, None)


def test_without_flags_the_probe_follows_the_serve_process(tmp_path: Path) -> None:
    from mig_exporter.cli import build_parser
    from mig_exporter.exporter.health_command import build_probe

    certificate = self_signed(tmp_path, "server")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certificate.cert_file}\n"
                   f"  key_file: {certificate.key_file}\n")
    args = build_parser().parse_args(["health"])
    pid1 = ["python3", "/usr/local/bin/mig-exporter", "serve", "--web.listen-address", ":9999",
            "--web.config.file", str(web)]
    assert build_probe(args, pid1).url == "https://127.0.0.1:9999/health"
    assert build_probe(args, ["/sbin/init"]).url == "http://127.0.0.1:9458/health"
