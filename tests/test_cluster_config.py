from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_passes_ray_up_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))  # raises on a schema error, as `ray up` would
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any("constraints.txt" in c for c in cfg["setup_commands"])
