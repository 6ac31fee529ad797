"""The cluster configs parse and carry what Ray's launcher, KubeRay and Kubernetes require.

The KubeRay manifests are validated against hand-written schema subsets in tests/data/kuberay/
(see the README there: the KubeRay CRDs could not be vendored), the AWS launcher config against
Ray's own schema, and the image's Dockerfile and .dockerignore by reading them (no docker here).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from metagan.space import load_spec

from .conftest import ROOT

CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
SCHEMAS = Path(__file__).parent / "data" / "kuberay"
MANIFESTS = ["raycluster.yaml", "rayjob.yaml", "ray-auth-secret.yaml"]


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def load_all(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), path
    return docs


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = yaml.safe_load((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


RAY_SCHEMA = validator("ray.io_v1_subset.schema.yaml")
CORE_SCHEMA = validator("core_v1_subset.schema.yaml")
SCHEMA_BY_KIND = {"RayCluster": RAY_SCHEMA, "RayJob": RAY_SCHEMA,
                  "ServiceAccount": CORE_SCHEMA, "Secret": CORE_SCHEMA}


def schema_errors(doc: dict) -> list[str]:
    schema = SCHEMA_BY_KIND.get(doc.get("kind", ""))
    if schema is None:
        return [f"no schema for kind {doc.get('kind')!r}"]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema.iter_errors(doc)]


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def ray_groups(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def ray_specs() -> list[tuple[str, dict]]:
    out = []
    for name in ("raycluster.yaml", "rayjob.yaml"):
        docs = load_all(KUBERAY / name)
        kind = "RayCluster" if name == "raycluster.yaml" else "RayJob"
        out.append((name, cluster_spec(only(docs, kind))))
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def auth_secret() -> dict:
    return only(load_all(KUBERAY / "ray-auth-secret.yaml"), "Secret")


# --- the image -----------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        instr, _, args = (buf + text).partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    assert not buf, "a continuation line ends the Dockerfile"
    return out


def test_dockerfile_installs_the_tested_versions_non_editable_as_a_non_root_user() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    ins = dockerfile_instructions(CLUSTER / "Dockerfile")
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 1 and froms[0].startswith(f"rayproject/ray:{ray.__version__}-py311-")
    assert ("ARG", "DEVICE=cpu") in ins  # the CPU image by default; --build-arg DEVICE=gpu
    assert "download.pytorch.org/whl/cpu" in text  # ... and torch's CPU build with it
    assert any(i == "COPY" and a.split()[-2:] == [".", "/app"] for i, a in ins)
    pip = [cmd for i, a in ins if i == "RUN" for cmd in re.split(r"&&|;|\|\|", a)
           if re.search(r"\bpip install\b", cmd)]
    assert pip, "no pip install in the Dockerfile"
    for cmd in pip:
        words = shlex.split(cmd)
        assert re.search(r"(-c|--constraint)[ =]constraints\.txt\b", cmd), cmd
        assert not {"-e", "--editable"} & set(words) and not any(
            w.startswith("--editable=") for w in words), f"editable install: {cmd}"
    assert any(".[search,cluster]" in shlex.split(cmd) for cmd in pip)
    users = [a for i, a in ins if i == "USER"]
    assert users, "the image runs as root (no USER)"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"the image runs as {users[-1]}"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the context: the last pattern matching it or one of
    its parent folders decides (`!` re-includes); `*`, `?` stay within a folder, `**` spans."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?|\[[^]]*\])", pattern.strip("/")):
            if token.startswith("["):
                out += token  # a character class, as in Go's filepath.Match
            else:
                out += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                    token, re.escape(token))
        return re.compile(out)

    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = regex(pattern[1:] if negate else pattern)
        if any(rx.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_local_state_out_and_the_build_inputs_in() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.strip().startswith("#")]
    for path in [".venv", ".venv/bin/python", "results", "results/x/trial/checkpoint", "runs",
                 ".git", ".git/HEAD", "docs/results", "docs/results/a.png", ".local-cluster",
                 ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", "data/omniglot",
                 "metagan/__pycache__/cli.cpython-311.pyc", "metagan.egg-info"]:
        assert dockerignored(path, patterns), f".dockerignore lets {path} into the image"
    # what `pip install .` and the jobs read (README.md: pyproject's readme)
    for path in ["pyproject.toml", "README.md", "constraints.txt", "metagan/cli.py",
                 "metagan/data/bundled/images_background_small1.zip", "configs/maml.yaml",
                 "search_spaces/maml.yaml"]:
        assert (ROOT / path).exists(), path
        assert not dockerignored(path, patterns), f".dockerignore leaves {path} out of the image"


def test_dockerignore_matcher() -> None:
    assert dockerignored("a/b/c", ["a"]) and dockerignored("x/__pycache__/y", ["**/__pycache__"])
    assert not dockerignored("docs/x.png", ["docs/results"])
    assert not dockerignored("a/keep", ["a", "!a/keep"]) and not dockerignored("ab", ["a"])
    assert dockerignored("m/x.pyc", ["**/*.py[cod]"]) and not dockerignored("m/x.py", ["**/*.py[cod]"])


# --- KubeRay manifests ---------------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifest_matches_the_schemas(name: str) -> None:
    for doc in load_all(KUBERAY / name):
        assert not schema_errors(doc), f"{name} {doc.get('kind')}: {schema_errors(doc)}"


def _pod(doc: dict) -> dict:
    return doc["spec"]["headGroupSpec"]["template"]["spec"]


def _set(path: list[Any], value: Any) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


BROKEN_CLUSTER: dict[str, Callable[[dict], None]] = {
    "misspelt field": lambda d: _pod(d).update(serviceAcountName="metagan-s3"),
    "no containers": lambda d: _pod(d).update(containers=[]),
    "quantity with a space": lambda d: _pod(d)["containers"][0]["resources"]["limits"].update(
        memory="8 Gi"),
    "unknown auth mode": _set(["spec", "authOptions", "mode"], "tokens"),
    "env from two sources": lambda d: _pod(d)["containers"][0]["env"][1]["valueFrom"].update(
        configMapKeyRef={"name": "x", "key": "y"}),
    "worker without a group name": lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"),
    "replicas as text": _set(["spec", "workerGroupSpecs", 0, "maxReplicas"], "8"),
    "port name too long": lambda d: _pod(d)["containers"][0]["ports"][0].update(
        name="global-control-store"),
    "name not a DNS label": _set(["metadata", "name"], "MetaGAN"),
    "wrong apiVersion": _set(["apiVersion"], "ray.io/v1alpha1"),
}
BROKEN_CORE: dict[str, tuple[str, Callable[[dict], None]]] = {
    "secret key with a space": ("Secret", _set(["stringData"], {"auth token": ""})),
    "secret data not base64": ("Secret", _set(["data"], {"auth_token": "not base64!"})),
    "secret without a name": ("Secret", lambda d: d["metadata"].pop("name")),
    "account name with capitals": ("ServiceAccount", _set(["metadata", "name"], "Metagan-S3")),
    "annotation not a qualified name": ("ServiceAccount", _set(
        ["metadata", "annotations"], {"eks.amazonaws.com/role arn": "x"})),
}


@pytest.mark.parametrize("case", list(BROKEN_CLUSTER))
def test_schema_rejects_a_broken_raycluster(case: str) -> None:
    doc = copy.deepcopy(only(load_all(KUBERAY / "raycluster.yaml"), "RayCluster"))
    BROKEN_CLUSTER[case](doc)
    assert schema_errors(doc), f"{case}: accepted"


@pytest.mark.parametrize("case", list(BROKEN_CORE))
def test_schema_rejects_a_broken_core_object(case: str) -> None:
    kind, edit = BROKEN_CORE[case]
    docs = load_all(KUBERAY / "raycluster.yaml") + load_all(KUBERAY / "ray-auth-secret.yaml")
    doc = copy.deepcopy(only(docs, kind))
    edit(doc)
    assert schema_errors(doc), f"{case}: accepted"


def test_pods_run_as_the_s3_service_account_with_an_iam_role() -> None:
    accounts = []
    for name in ("raycluster.yaml", "rayjob.yaml"):
        docs = load_all(KUBERAY / name)
        account = only(docs, "ServiceAccount")  # each manifest applies on its own
        accounts.append(account)
        role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::[A-Z0-9_]+:role/[\w+=,.@-]+", role), role
        spec = cluster_spec(next(d for d in docs if d["kind"] in ("RayCluster", "RayJob")))
        for group in ray_groups(spec):
            pod = group["template"]["spec"]
            assert pod.get("serviceAccountName") == account["metadata"]["name"], name
            for container in pod["containers"]:
                assert env_of(container).get("AWS_REGION", {}).get("value"), container["name"]
    assert accounts[0] == accounts[1], "the two manifests define the service account differently"


def test_token_auth_on_every_ray_container() -> None:
    secret = auth_secret()
    keys = {**secret.get("data", {}), **secret.get("stringData", {})}
    assert keys == {"auth_token": ""}, "a token is committed (keep it out of the repository)"
    secret_name = secret["metadata"]["name"]
    for name, spec in ray_specs():
        assert spec["authOptions"] == {"mode": "token", "secretName": secret_name}, name
        containers = [c for g in ray_groups(spec) for c in g["template"]["spec"]["containers"]]
        if spec.get("enableInTreeAutoscaling"):  # the autoscaler talks to the GCS too
            containers.append({"name": "autoscaler", **spec["autoscalerOptions"]})
        for container in containers:
            env = env_of(container)
            where = f"{name} {container['name']}"
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", where
            token = env.get("RAY_AUTH_TOKEN", {})
            assert "value" not in token, f"{where}: a literal token"
            ref = token.get("valueFrom", {}).get("secretKeyRef", {})
            assert ref.get("name") == secret_name and ref.get("key") in keys, where


def _gpu_groups(spec: dict) -> list[dict]:
    groups = [g for g in spec["workerGroupSpecs"]
              if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert groups, "no GPU worker group"
    return groups


def test_gpu_worker_groups_request_and_declare_gpus() -> None:
    for name, spec in ray_specs():
        for group in _gpu_groups(spec):
            resources = group["template"]["spec"]["containers"][0]["resources"]
            gpus = int(resources["limits"]["nvidia.com/gpu"])
            assert gpus >= 1, name
            # extended resources: requests, where given, must equal limits
            assert resources.get("requests", {}).get("nvidia.com/gpu", gpus) in (gpus, str(gpus))
            params = group["rayStartParams"]
            assert float(params["num-gpus"]) == gpus, f"{name}: Ray's GPUs differ from the pod's"
            assert float(params["num-cpus"]) == float(resources["limits"]["cpu"]), name


def _check_trials_fit(space: str, sets: list[str], spec: dict) -> None:
    trial = load_spec(ROOT / space, sets).resources
    assert trial.gpu > 0, f"{space} {sets}: trials ask for no GPU"
    assert any(trial.gpu <= float(g["rayStartParams"]["num-gpus"])
               and trial.cpu <= float(g["rayStartParams"]["num-cpus"]) for g in _gpu_groups(spec))


def test_rayjob_search_asks_for_gpus_its_workers_have() -> None:
    docs = load_all(KUBERAY / "rayjob.yaml")
    job = only(docs, "RayJob")
    words = shlex.split(job["spec"]["entrypoint"])
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    _check_trials_fit(words[4], sets, cluster_spec(job))


def test_raycluster_documents_a_gpu_submit() -> None:
    path = KUBERAY / "raycluster.yaml"
    comment = "\n".join(line[1:] for line in path.read_text().splitlines() if line.startswith("#"))
    submits = [shlex.split(c, comments=True) for c in comment.replace("\\\n", " ").splitlines()
               if c.strip().startswith("metagan submit ")]
    assert submits, "raycluster.yaml shows no metagan submit"
    words = submits[0]
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    _check_trials_fit(words[2], sets, cluster_spec(only(load_all(path), "RayCluster")))


def _check_ray_group(group: dict, gpu: bool) -> None:
    assert isinstance(group["rayStartParams"], dict)
    containers = group["template"]["spec"]["containers"]
    assert containers and all(c["image"] for c in containers)
    if gpu:
        assert containers[0]["resources"]["limits"]["nvidia.com/gpu"]
        assert group["groupName"] and group["maxReplicas"] >= group.get("minReplicas", 0)
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__
    _check_ray_group(spec["headGroupSpec"], gpu=False)
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert spec["workerGroupSpecs"]
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(set(names)) == len(names), "worker group names repeat"
    for group in spec["workerGroupSpecs"]:
        _check_ray_group(group, gpu=True)


def test_kuberay_raycluster() -> None:
    doc = only(load_all(KUBERAY / "raycluster.yaml"), "RayCluster")
    assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"])


def test_kuberay_rayjob_runs_a_shipped_space() -> None:
    doc = only(load_all(KUBERAY / "rayjob.yaml"), "RayJob")
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:4] == ["python", "-m", "metagan.cli", "search"]
    assert (ROOT / entry[4]).is_file()
    assert "--storage" in entry
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    _check_cluster_spec(spec["rayClusterSpec"])


# --- the AWS launcher config ---------------------------------------------------------------


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


def test_aws_head_keeps_the_launchers_permissions() -> None:
    """A head profile in the config replaces the one `ray up` would make (EC2 + S3): it must
    be the head's own, not the workers' bucket-only profile."""
    types = load(CLUSTER / "aws.yaml")["available_node_types"]
    head = types["head"]["node_config"]["IamInstanceProfile"]["Arn"]
    workers = {t["node_config"]["IamInstanceProfile"]["Arn"] for k, t in types.items() if k != "head"}
    assert head not in workers, "the head launches workers: it needs more than the workers' role"


def test_aws_nodes_start_with_token_auth() -> None:
    cfg = load(CLUSTER / "aws.yaml")
    mounts = {Path(remote).parts[-2:]: local for remote, local in cfg["file_mounts"].items()}
    assert mounts.get((".ray", "auth_token")) == "~/.ray/auth_token"
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert re.search(r"(^|[;&\s])RAY_AUTH_MODE=token\s", command), command


def test_local_cluster_script_is_valid_bash() -> None:
    script = CLUSTER / "local_cluster.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    r = subprocess.run(["bash", str(script), "bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
