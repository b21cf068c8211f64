from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.local.yaml"])
def test_cluster_configs_pass_ray_up_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(cfg))  # raises on a schema error, as `ray up` would
    assert any("constraints.txt" in c for c in cfg["setup_commands"])  # installs cxrray with its pinned torch
    assert "." in cfg["file_mounts"].values()  # ships this checkout
    assert {"**/.venv", "runs/**", ".git"} <= set(cfg["rsync_exclude"])  # the source travels, not 6.8 GB of venv
    if cfg["provider"]["type"] == "local":
        assert cfg["provider"]["worker_ips"] and cfg["provider"]["head_ip"]
        assert any("python3.11 -m venv" in c for c in cfg["setup_commands"])  # cxrray needs Python >= 3.11
    else:
        assert cfg["head_node_type"] in cfg["available_node_types"]
        assert cfg["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
        ray_pin = next(line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
                       if line.startswith("ray=="))
        assert cfg["docker"]["image"] == f"rayproject/ray:{ray_pin}-py311-gpu"  # Python 3.11 + CUDA, our Ray
        assert "-v /fsx:/fsx" in cfg["docker"]["run_options"]  # the shared --out inside the container
        assert any("mount" in c and "/fsx" in c for c in cfg["initialization_commands"])
        for node in cfg["available_node_types"].values():  # --storage s3://... from every node
            assert node["node_config"]["IamInstanceProfile"]


def test_a_broken_config_is_rejected():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["gpu_worker"]["max_wokers"] = 4  # a typo
    with pytest.raises(Exception):
        validate_config(prepare_config(cfg))


def test_readme_launches_with_commands_ray_accepts():
    """`ray attach` takes no command (it fails with "Got unexpected extra arguments"); the README uses ray exec."""
    readme = (ROOT / "README.md").read_text()
    assert "ray attach cluster" not in readme and "ray exec cluster.yaml '" in readme
    for name in ("cluster.yaml", "cluster.local.yaml"):
        assert "ray attach" not in (ROOT / name).read_text()
