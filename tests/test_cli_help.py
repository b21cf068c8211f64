"""``--help`` of every command answers from a fresh interpreter without importing torch, timm, kornia or Ray
(timing lives in bench/cli_help.py), and the registry-name index it reads equals the live registries."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from cli_help import COMMANDS, help_run  # noqa: E402

EXPECTED = {  # an option each help text must explain, with a registry name where the command lists some
    "hide_seek": ("--backbones", "densenet121"), "source_bias": ("--designs", "independent"),
    "staged_pretraining": ("--paths", "--recipe"), "validate": ("--confounds", "resnet18"),
    "analysis": ("--saliency", "--family"), "segmentation": ("train", "fill"),
    "adapters": ("usage:", "covidx"), "params": ("--models", "vgg19"),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_answers_without_torch_or_ray(name):
    _, text, heavy = help_run(COMMANDS[name])
    assert "usage:" in text and all(word in text for word in EXPECTED[name]), text[-2000:]
    assert heavy == [], f"{name} --help imported {heavy}"


def test_registry_name_index_matches_the_registries():
    from cxrray.tuning import names

    stored = json.loads(names.FILE.read_text())
    assert stored == names.live(), "registry_names.json is stale: run python -m cxrray.tuning.names"
    assert names.names("hide_seek") == ("original", "lungs_isolated", "lungs_removed", "lungs_framed",
                                        "lungs_boxed_out")
