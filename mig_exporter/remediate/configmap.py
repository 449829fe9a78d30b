"""The GPU Operator's mig-parted ConfigMap: read the one in the cluster, write it back merged.

Input is what ``kubectl get configmap -n gpu-operator NAME -o yaml`` (or ``-o json``) prints, the
ConfigMap the ClusterPolicy's ``migManager.config.name`` points at (``default-mig-parted-config``
unless changed), or a bare mig-parted config file. The Operator owns and reconciles its default
ConfigMap, so changes to it would not last: the merged configs go to a ConfigMap of mig-exporter's
own (``mig-exporter-mig-parted-config``), which the ClusterPolicy is pointed at once; a custom
ConfigMap already in use is updated in place (same name, namespace and data key). Only name,
namespace and data are written, so ``kubectl apply -f`` is never refused as stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from mig_exporter.errors import InputError, load_yaml, read_yaml_file, yaml_problem
from mig_exporter.remediate import migparted

DEFAULT_NAME = "default-mig-parted-config"
DEFAULT_NAMESPACE = "gpu-operator"
DEFAULT_KEY = "config.yaml"
OWN_NAME = "mig-exporter-mig-parted-config"


@dataclass(frozen=True)
class ConfigMap:
    name: str
    namespace: str
    key: str  # the data key holding the mig-parted config
    configs: migparted.Configs

    @property
    def target_name(self) -> str:
        """Where the merged configs go: the Operator's own default is not to be edited."""
        return OWN_NAME if self.name == DEFAULT_NAME else self.name

    def patch_command(self) -> str | None:
        """The one-time ``kubectl patch`` pointing the ClusterPolicy at ``target_name``, when needed."""
        if self.target_name == self.name:
            return None
        spec = f'{{"spec":{{"migManager":{{"config":{{"name":"{self.target_name}"}}}}}}}}'
        return f"kubectl patch clusterpolicies.nvidia.com/cluster-policy --type merge -p '{spec}'"


def read(path: str) -> ConfigMap:
    """The ConfigMap (or bare mig-parted config) in ``path``, every config validated as mig-parted would."""
    document = read_yaml_file(path, unreadable=f"--gpu-operator.config {path}")
    if isinstance(document, dict) and document.get("kind") == "ConfigMap":
        metadata = document.get("metadata") or {}
        data = document.get("data") or {}
        keys = [key for key, value in data.items() if isinstance(value, str) and "mig-configs" in value]
        if len(keys) != 1:
            raise InputError(f"{path}: ConfigMap {metadata.get('name')}: expected one data key holding a "
                             f"mig-parted config, found {len(keys)}")
        try:
            config = load_yaml(data[keys[0]])
        except yaml.YAMLError as error:
            raise InputError(f"{path}: data.{keys[0]}: not valid YAML: {yaml_problem(error)}") from None
        configs = migparted.parse_document(config, f"{path}: data.{keys[0]}")
        return ConfigMap(str(metadata.get("name") or DEFAULT_NAME),
                         str(metadata.get("namespace") or DEFAULT_NAMESPACE), keys[0], configs)
    return ConfigMap(DEFAULT_NAME, DEFAULT_NAMESPACE, DEFAULT_KEY, migparted.parse_document(document, path))


def render(config_map: ConfigMap, configs: migparted.Configs) -> str:
    """``config_map`` holding ``configs``, as YAML for ``kubectl apply -f``."""
    document: dict[str, Any] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": config_map.target_name, "namespace": config_map.namespace,
                     "labels": {"app.kubernetes.io/managed-by": "mig-exporter"}},
        "data": {config_map.key: migparted.render(configs)},
    }
    return yaml.dump(document, Dumper=_Literal, sort_keys=False, width=120)


class _Literal(yaml.SafeDumper):
    """The embedded config as a literal block, so the ConfigMap reads like the file."""


_Literal.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))
