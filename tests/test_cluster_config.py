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
    if cfg["provider"]["type"] == "local":
        assert cfg["provider"]["worker_ips"] and cfg["provider"]["head_ip"]
    else:
        assert cfg["head_node_type"] in cfg["available_node_types"]
        assert cfg["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1


def test_a_broken_config_is_rejected():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["gpu_worker"]["max_wokers"] = 4  # a typo
    with pytest.raises(Exception):
        validate_config(prepare_config(cfg))
