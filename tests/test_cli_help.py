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
    "cxrray": ("hide-seek", "segment"), "cxrray hide-seek": ("usage: cxrray hide-seek", "densenet121"),
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


def test_the_cxrray_command_runs_each_study_with_its_options_and_errors():
    """``cxrray <command>`` is the scripts' entry point: the same options, the same one-line errors (exit 2)."""
    import subprocess

    run = lambda *a: subprocess.run([sys.executable, "-m", "cxrray.studies.command", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=ROOT, timeout=120)
    bad = run("hide-seek", "--image-size", "-32")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "cxrray hide-seek: error: --image-size -32 is out of range: [16, 4096] (px)")
    unknown = run("hide_seek")
    assert unknown.returncode == 2 and "unknown command 'hide_seek' (did you mean 'hide-seek'?)" in unknown.stderr
    assert run("plan", "--help").stdout.startswith("usage: python -m cxrray.analysis plan")
    from cxrray.studies.command import COMMANDS

    assert {name for name in COMMANDS} == {"hide-seek", "staged", "source-bias", "validate", "analyze", "plan",
                                           "workspace", "segment", "adapters", "audit"}
    assert run("workspace", "--help").stdout.startswith("usage: python -m cxrray.analysis workspace")
