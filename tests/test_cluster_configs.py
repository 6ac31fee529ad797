"""The cluster configs parse and carry what Ray's launcher and KubeRay require."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import ray
import yaml

from .conftest import ROOT

CLUSTER = ROOT / "cluster"


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def test_aws_launcher_config_matches_rays_schema() -> None:
    cfg = load(CLUSTER / "aws.yaml")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)  # the schema `ray up` itself validates against
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert types["head"]["resources"] == {"CPU": 0}
    gpu = types["gpu_worker"]["node_config"]
    assert gpu["InstanceType"].startswith(("g", "p"))  # a GPU instance family
    for node in types.values():  # S3 through an instance role, never keys in the file
        assert "IamInstanceProfile" in node["node_config"]
    text = (CLUSTER / "aws.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret" not in text.lower()
    assert any("pip install" in c and "metagan" in c for c in cfg["setup_commands"])


def _check_ray_group(group: dict, gpu: bool) -> None:
    assert isinstance(group["rayStartParams"], dict)
    containers = group["template"]["spec"]["containers"]
    assert containers and all(c["image"] for c in containers)
    if gpu:
        assert containers[0]["resources"]["limits"]["nvidia.com/gpu"]
        assert group["groupName"] and group["maxReplicas"] >= group.get("minReplicas", 0)


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__
    _check_ray_group(spec["headGroupSpec"], gpu=False)
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        _check_ray_group(group, gpu=True)


def test_kuberay_raycluster() -> None:
    doc = load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"])


def test_kuberay_rayjob_runs_a_shipped_space() -> None:
    doc = load(CLUSTER / "kuberay" / "rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:4] == ["python", "-m", "metagan.cli", "search"]
    assert (ROOT / entry[4]).is_file()
    assert "--storage" in entry
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    _check_cluster_spec(spec["rayClusterSpec"])


def test_local_cluster_script_is_valid_bash() -> None:
    script = CLUSTER / "local_cluster.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    r = subprocess.run(["bash", str(script), "bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
