"""A saved model that cannot be used again is one line naming its trial and file (issue 42, item 5): a card
whose backbone was edited used to be a page of ``state_dict`` errors after minutes, taking every other trial's
saliency with it."""

from __future__ import annotations

import json

import pytest
import torch

from cxrray.config import TrialDir
from cxrray.models import build_backbone
from cxrray.models.card import ModelCard, load_model
from cxrray.registry import UserError


@pytest.fixture()
def saved(tmp_path) -> TrialDir:
    trial = TrialDir(tmp_path / "abc123")
    trial.path.mkdir()
    model, _ = build_backbone("basecnn", 2, 1, False, 32)
    torch.save(model.state_dict(), trial.model)
    ModelCard.of("abc123", "basecnn", "original", "CL2", 32, 1, 2, False).write(trial)
    return trial


def test_a_saved_model_loads_with_its_card(saved):
    card, model = load_model(saved)
    assert card.backbone == "basecnn" and not model.training
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2)


def _edit(trial: TrialDir, **fields) -> None:
    card = trial.file("model.json")
    card.write_text(json.dumps(json.loads(card.read_text()) | fields))


@pytest.mark.parametrize("damage, says", [
    (lambda t: _edit(t, backbone="resnet18"), "model.pt does not match its card {card} (backbone resnet18, 2 "
                                              "outputs: Error(s) in loading state_dict for"),
    (lambda t: _edit(t, num_outputs=3), "model.pt does not match its card {card} (backbone basecnn, 3 outputs"),
    (lambda t: _edit(t, backbone="no_such_net"), "its card {card} cannot be built (unknown backbone 'no_such_net'"),
    (lambda t: t.model.write_bytes(t.model.read_bytes()[:100]), "model.pt cannot be read ("),
    (lambda t: t.file("model.json").write_text("{not json"), "{card} is not a readable model card ("),
    (lambda t: _edit(t, colour="red"), "{card} is not a readable model card ("),
])
def test_a_model_that_cannot_be_used_is_one_line_naming_the_trial(saved, damage, says):
    damage(saved)
    with pytest.raises(UserError) as err:
        load_model(saved)
    text = str(err.value)
    assert "\n" not in text and len(text) < 700 and text.startswith("trial abc123: "), text
    assert says.format(card=saved.file("model.json")) in text, text
