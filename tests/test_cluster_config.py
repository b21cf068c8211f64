"""Both cluster-launcher configs pass the check `ray up` runs, and hold what a user's first `ray up` needs: the
values to replace marked in one place at the top, the source (never a run folder) mounted, the venv or image
Python on the PATH, ray[default] at the driver's pin, no sudo that is not checked first. The launch itself runs
for real in tests/test_cluster_launcher.py."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> tuple[str, dict]:
    text = (ROOT / name).read_text()
    return text, yaml.safe_load(text)


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.local.yaml"])
def test_cluster_configs_pass_ray_up_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    text, cfg = _load(name)
    validate_config(prepare_config(cfg))  # raises on a schema error, as `ray up` would
    setup = " ".join(cfg["setup_commands"])
    assert "constraints.txt" in setup and "[cluster]" in setup  # pinned torch, ray[default] at the driver's pin
    assert set(cfg["file_mounts"].values()) == {"./cxrray", "./sweeps", "./datasets", "./pyproject.toml",
                                                "./constraints.txt", "./README.md"}  # the source, no run folder
    lines = text.splitlines()
    marked = [k for k, line in enumerate(lines) if "# REPLACE" in line]
    body = next(k for k, line in enumerate(lines) if line and not line.startswith("#"))
    assert marked and max(marked) - body < 40  # every value to replace in the first lines of the file
    for line in lines:  # sudo only where the file checks for it first
        if "sudo " in line and not line.lstrip().startswith("#"):
            assert "command -v sudo" in text or "command -v tmux" in line, line
    if cfg["provider"]["type"] == "local":
        assert {m for line in lines if "# REPLACE" in line for m in re.findall(r"^\s+(\w+):", line)} == {
            "head_ip", "worker_ips", "ssh_user", "ssh_private_key"}
        assert not any("sudo" in c for k in ("initialization_commands", "setup_commands") for c in cfg[k])  # no root
        assert any("cxrray-venv/bin" in c and ".bashrc" in c for c in cfg["setup_commands"])  # venv on the PATH
        assert all(c.split()[0] == "ray" for c in cfg["head_start_ray_commands"])  # found through that PATH
    else:
        assert cfg["head_node_type"] in cfg["available_node_types"]
        assert cfg["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
        ray_pin = next(line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
                       if line.startswith("ray=="))
        assert cfg["docker"]["image"] == f"rayproject/ray:{ray_pin}-py311-gpu"  # Python 3.11 + CUDA, our Ray
        assert "-v /fsx:/fsx" in cfg["docker"]["run_options"]  # the shared --out inside the container
        init = cfg["initialization_commands"]
        assert any("mkdir -p /fsx" in c for c in init) and "mountpoint -q /fsx ||" in init[-1]  # created, checked
        for node in cfg["available_node_types"].values():  # --storage s3://... from every node
            assert node["node_config"]["IamInstanceProfile"]


def test_a_broken_config_is_rejected():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["gpu_worker"]["max_wokers"] = 4  # a typo
    with pytest.raises(Exception, match="max_wokers"):
        validate_config(prepare_config(cfg))


def test_readme_launches_with_commands_ray_accepts():
    """`ray attach` takes no command (it fails with "Got unexpected extra arguments"); the README uses ray exec."""
    readme = (ROOT / "README.md").read_text()
    assert "ray attach cluster" not in readme and "ray exec cluster.yaml '" in readme
    for name in ("cluster.yaml", "cluster.local.yaml"):
        assert "ray attach" not in (ROOT / name).read_text()
