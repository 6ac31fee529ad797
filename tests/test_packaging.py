"""What `pip install metagan` (the core, no extras) must give: training and the Python API
without Ray, HyperOpt or matplotlib, and pyproject's extras saying where those live."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT, tiny_data, write_yaml

# Importing any of these raises ImportError, as if the extra were not installed.
WITHOUT_EXTRAS = "import sys; sys.modules.update({m: None for m in ('ray', 'hyperopt', 'matplotlib')}); "


def run_without_extras(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS + code], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_core_dependencies_leave_ray_and_matplotlib_to_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert "ray" not in core and "hyperopt" not in core and "matplotlib" not in core
    extras = project["optional-dependencies"]
    assert any(d.startswith("ray[tune]") for d in extras["search"])
    assert any(d.startswith("ray[default]") for d in extras["cluster"])
    assert any(d.startswith("matplotlib") for d in extras["report"])
    assert project["requires-python"] == ">=3.11"


def test_train_and_the_api_work_without_ray(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", tiny_data("protonet", **{"train.iterations": 2}))
    run = tmp_path / "run"
    r = run_without_extras(
        "from metagan.cli import main; from metagan import api; "
        f"rc = main(['train', {str(config)!r}, '--out', {str(run)!r}, '--quiet']); "
        f"print('experiments', api.list_experiments({str(tmp_path)!r})); sys.exit(rc)")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "experiments []" in r.stdout and (run / "result.json").is_file()


def test_a_search_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    r = run_without_extras("from metagan.cli import main; "
                           "sys.exit(main(['search', 'search_spaces/demo.yaml', '--name', 'x', "
                           f"'--storage', {str(tmp_path)!r}]))")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "pip install 'metagan[search]'" in r.stderr


@pytest.mark.slow
def test_a_core_install_loads_and_uses_a_model_without_ray(tmp_path: Path) -> None:
    """`pip install .` (no extras, the tested pins) into a new venv: no Ray, HyperOpt or
    matplotlib arrive; metagan.api loads a trained run and predicts; a search says which
    extra to install."""
    source = tmp_path / "src"  # a copy: building in-tree would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "metagan"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # torch's build as `make install` picks it (the CPU index on a CPU machine without a
    # local wheel; nothing extra here).
    torch_index = subprocess.run(["make", "-s", "torch-index"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=120, check=True).stdout.strip()
    extra = ["--extra-index-url", torch_index] if torch_index else []
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c",
                          str(ROOT / "constraints.txt"), *extra, str(source)],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "c.yaml", tiny_data("protonet", **{"train.iterations": 2}))
    subprocess.run([sys.executable, "-m", "metagan.cli", "train", str(config), "--out", str(run),
                    "--quiet"], check=True, capture_output=True, timeout=300, cwd=ROOT)
    code = ("import importlib.util as u, json, sys, torch; "
            "missing = [m for m in ('ray', 'hyperopt', 'matplotlib') if u.find_spec(m) is None]; "
            "from metagan import api; "
            f"model = api.load_model({str(run)!r}); "
            "x = torch.rand(5, 1, 28, 28); "
            "p = model.predict(x, list('abcde'), x); "
            "print(json.dumps({'missing': missing, 'labels': p.labels, "
            "'file': api.__file__}))")
    r = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["missing"] == ["ray", "hyperopt", "matplotlib"]
    assert out["labels"] == list("abcde")  # each support image is its own nearest prototype
    assert out["file"].startswith(str(venv))  # the installed copy, not the checkout
    search = subprocess.run([str(venv / "bin" / "metagan"), "search",
                             str(ROOT / "search_spaces" / "demo.yaml"), "--name", "x",
                             "--storage", str(tmp_path / "store")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert search.returncode == 2 and "pip install 'metagan[search]'" in search.stderr
    assert "Traceback" not in search.stderr


def test_the_makefile_picks_torch_s_cpu_build_on_a_cpu_machine(tmp_path: Path) -> None:
    """Where the pinned torch is only on PyPI (its Linux wheel is the CUDA build), a Linux
    machine without an NVIDIA GPU installs from PyTorch's CPU index; where the pin installs
    without an index (a local wheel, as here) or a GPU is present, no index is added."""
    import os

    make = shutil.which("make")
    assert make

    def index(env: dict[str, str]) -> str:
        r = subprocess.run([make, "-s", "torch-index"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    if platform.system() != "Linux":
        pytest.skip("the CPU index is chosen on Linux only")
    pin = next(line.split("==")[1].strip() for line in (ROOT / "constraints.txt").open()
               if line.startswith("torch=="))
    # A PATH without nvidia-smi (a CPU machine) and one with a stand-in (a GPU machine).
    cpu_bin, gpu_bin = tmp_path / "cpu", tmp_path / "gpu"
    for d in (cpu_bin, gpu_bin):
        d.mkdir()
        for tool in ("sed", "uname"):
            found = shutil.which(tool)
            assert found, tool
            (d / tool).symlink_to(found)
        # The interpreter itself (a version manager's shim would need its own PATH).
        (d / "python3").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    (gpu_bin / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (gpu_bin / "nvidia-smi").chmod(0o755)
    # Only PyPI: no pip configuration, no local wheels (and no network probe).
    pypi_only = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    pypi_only.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PATH=str(cpu_bin))
    assert index(pypi_only) == "https://download.pytorch.org/whl/cpu"
    assert index({**pypi_only, "PATH": str(gpu_bin)}) == ""
    local = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run",
                            "--ignore-installed", "--no-deps", "--no-index", f"torch=={pin}"],
                           capture_output=True).returncode == 0
    if local:  # the pinned torch is a local wheel here, as on the test machines
        assert index({**os.environ, "PATH": f"{cpu_bin}:{os.environ['PATH']}"}) == ""
    assert index({**pypi_only, "TORCH_INDEX": ""}) == ""  # turned off by hand
