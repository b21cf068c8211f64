"""A user's own network in the full protocol (issue 40): ``--backbones file:module.py:build`` and the
``cxrray.backbones`` entry points build it in every trial, its facts read off the file; ``--init-weights`` starts
every trial from the user's checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from cxrray.models import BACKBONES, build_backbone
from cxrray.models.names import absolute
from cxrray.registry import UnknownNameError, UserError

ROOT = Path(__file__).resolve().parents[1]
ARCH = '''"""A small user network."""
from torch import nn

GRADCAM_LAYER = "{layer}"
MEAN, STD = 0.4, 0.3


def build(num_classes, in_chans=1):
    return nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


def _arch(folder: Path, layer: str = "2") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "usernet.py"
    path.write_text(ARCH.format(layer=layer))
    return path


def test_a_file_backbone_is_built_with_its_declared_facts(tmp_path):
    name = f"file:{_arch(tmp_path)}:build"
    bdef = BACKBONES.get(name)
    assert (bdef.gradcam_layer, bdef.mean, bdef.std) == ("2", 0.4, 0.3)
    assert bdef.description == "A small user network."
    model, init = build_backbone(name, 3, 1, image_size=32)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3) and init == "random"
    assert name in BACKBONES and name not in BACKBONES.names()  # made on demand, not listed with the built-ins


def test_a_file_backbone_without_a_layer_gets_its_last_convolution_and_bad_files_are_one_line(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text("from torch import nn\n\ndef net(num_classes):\n    return nn.Sequential(nn.Conv2d(1, 4, 3), "
                     "nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))\n")
    assert BACKBONES.get(f"file:{plain}:net").gradcam_layer == "1"
    with pytest.raises(UserError, match="GRADCAM_LAYER 'head' is not a module of the network"):
        BACKBONES.get(f"file:{_arch(tmp_path / 'b', layer='head')}:build")
    with pytest.raises(UserError, match="has no function 'missing'"):
        BACKBONES.get(f"file:{plain}:missing")
    with pytest.raises(UserError, match=r"must be an existing module\.py:function"):
        BACKBONES.get(f"file:{tmp_path / 'nowhere.py'}:build")
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(UserError, match=r"importing .*broken.py failed \(ModuleNotFoundError"):
        BACKBONES.get(f"file:{broken}:build")
    with pytest.raises(UnknownNameError, match=r"or file:<module\.py>:<function>"):
        BACKBONES.get("no_such_backbone")
    assert absolute("file:rel/net.py:build") == f"file:{Path('rel/net.py').resolve()}:build"
    assert absolute("resnet18") == "resnet18"


def test_an_installed_entry_point_names_a_backbone(tmp_path, monkeypatch):
    """A package that declares ``[project.entry-points."cxrray.backbones"] usernet = "usernet:build"``."""
    _arch(tmp_path)
    info = tmp_path / "usernets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: usernets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cxrray.backbones]\nusernet_ep = usernet:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bdef = BACKBONES.get("usernet_ep")
    assert bdef.name == "usernet_ep" and bdef.gradcam_layer == "2"
    assert bdef.build(4, 1, False)(torch.rand(1, 1, 16, 16)).shape == (1, 4)


def test_init_weights_is_pretrained_from_one_file(tmp_path):
    from cxrray.studies.hide_seek import parse_args

    study = parse_args(["--init-weights", str(tmp_path / "w.pt")])
    assert study.pretrained and study.weights == tmp_path / "w.pt"
    with pytest.raises(UserError, match="name two files; give one"):
        parse_args(["--init-weights", str(tmp_path / "w.pt"), "--weights", str(tmp_path / "other.pt")])


def test_the_protocol_trains_a_users_network_from_its_checkpoint(tmp_path):
    """A real smoke sweep with ``--backbones file:usernet.py:build --init-weights w.pt``: both trials build the
    user's network in their Ray workers, start from the checkpoint (recorded as ``init=file:w.pt``) and
    finish; the relative path given on the command line is stored absolute."""
    arch = _arch(tmp_path / "code")
    torch.manual_seed(0)
    torch.save(BACKBONES.get(f"file:{arch}:build").build(2, 1, False).state_dict(), tmp_path / "w.pt")
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--backbones",
                           "file:code/usernet.py:build", "--init-weights", "w.pt", "--out", str(out), "--wandb",
                           "disabled"], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = pl.read_parquet(out / "results.parquet")
    assert results["status"].to_list() == ["finished", "finished"]
    assert set(results["backbone"]) == {f"file:{arch.resolve()}:build"}
    assert set(results["init"]) == {"file:w.pt"}
