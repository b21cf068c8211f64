"""Recipes: every preset builds, class weights resolve, gradient accumulation equals a bigger batch."""

import numpy as np
import pytest
import torch
from torch import nn

from cxrray.config import TrainRecipe
from cxrray.data.tasks import TASKS
from cxrray.models import build_backbone
from cxrray.training.heads import make_head
from cxrray.training.loop import InputPipeline, make_optimizer, train_epoch
from cxrray.training.recipes import RECIPES, resolve_class_weights


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_builds_its_optimizer(name):
    r = RECIPES.get(name)
    model = nn.Linear(3, 2)
    opt = make_optimizer(model, r)
    assert opt.param_groups[0]["lr"] == r.lr
    assert isinstance(opt, torch.optim.SGD if r.optimizer == "sgd" else torch.optim.Adam)
    n = 3 if "," in r.class_weights else 2
    w = resolve_class_weights(r, [1.0] * n)
    assert w is None or len(w) == n


def test_study_presets_match_the_protocols():
    hs, st = RECIPES.get("hide_seek"), RECIPES.get("staged")
    assert (hs.lr, hs.batch_size, hs.epochs, hs.class_weights, hs.hflip) == (1e-4, 32, 20, "1,1,4", False)
    assert (st.optimizer, st.lr, st.momentum, st.weight_decay, st.plateau_patience, st.plateau_factor,
            st.early_stop) == ("sgd", 0.01, 0.9, 1e-4, 3, 0.1, 10)
    assert RECIPES.get("covid_sdnet").batch_size == 16 and RECIPES.get("covid_cxnet").label_smoothing > 0


def test_fixed_class_weights_need_one_per_class():
    assert resolve_class_weights(TrainRecipe(class_weights="1,1,4"), [0.5, 1, 2]) == [1.0, 1.0, 4.0]
    with pytest.raises(ValueError, match="3 values for 2 classes"):
        resolve_class_weights(TrainRecipe(class_weights="1,1,4"), [1, 1])
    with pytest.raises(ValueError, match="optimizer 'rmsprop' is not valid; valid: adam, sgd"):
        TrainRecipe(optimizer="rmsprop")  # refused where it is written, before any Ray actor
    assert isinstance(make_optimizer(nn.Linear(2, 2), TrainRecipe(optimizer="sgd")), torch.optim.SGD)


def test_gradient_accumulation_equals_the_larger_batch():
    rng = np.random.default_rng(0)
    data = {"image": rng.random((16, 32, 32), dtype=np.float32), "mask": np.ones((16, 32, 32), np.uint8),
            "label": np.array(["NOR", "CVP"] * 8)}
    halves = [{k: v[:8] for k, v in data.items()}, {k: v[8:] for k, v in data.items()}]
    pipe = InputPipeline("original")
    params = []
    for batches, accum in (([data], 1), (halves, 2)):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model, _ = build_backbone("basecnn", 2, 1, image_size=32)  # no batch norm: exact equivalence
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_epoch(model, batches, pipe, opt, make_head(TASKS.get("CL2")), torch.device("cpu"),
                    torch.Generator().manual_seed(0), accum=accum)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(params[0], params[1], atol=1e-6)
    assert not torch.allclose(params[0], torch.cat([p.detach().flatten() for p in
                                                    build_backbone("basecnn", 2, 1, image_size=32)[0].parameters()]))
