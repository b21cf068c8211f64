"""The model card next to ``model.pt``, and the one loader every reader of a saved model uses.

A trained model is only usable with its facts: which backbone and how many inputs and outputs, the image size,
the normalisation its pipeline applied, the representation it saw, the task (its classes and positive class),
how its outputs become probabilities, and the layers saliency reads. The trial writes them as
``trials/<id>/model.json`` (``ModelCard``) beside the weights, as timm attaches ``pretrained_cfg`` to a model;
``load_model(trial_dir)`` rebuilds the network from the card alone, so saliency, its sanity checks and the
transfer matrix cannot rebuild it differently.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

import torch

from cxrray.config import TrialDir
from cxrray.models.backbones import CamMethod
from cxrray.registry import UserError

Head = Literal["softmax", "capsule", "sigmoid"]
CARD = "model.json"


@dataclass(frozen=True)
class ModelCard:
    """What is needed to use a saved model again."""

    trial_id: str
    backbone: str
    representation: str
    task: str
    image_size: int
    in_channels: int
    num_outputs: int
    mean: float  # the input normalisation the trial's pipeline applied
    std: float
    head: Head  # how outputs become probabilities
    cam_layer: str  # the backbone's Grad-CAM layer, then the deeper candidates
    cam_layers: tuple[str, ...] = ()
    cam_method: CamMethod = "gradcam"
    mask_dilation: int = 0  # pixels the lung mask was grown by before the representation hid it

    @classmethod
    def of(cls, trial_id: str, backbone: str, representation: str, task: str, image_size: int, in_channels: int,
           num_outputs: int, multilabel: bool, mask_dilation: int = 0) -> ModelCard:
        """The card of a trial's model, the backbone's facts taken from its registry entry."""
        from cxrray.models import BACKBONES

        b = BACKBONES.get(backbone)
        head: Head = "sigmoid" if multilabel else "capsule" if b.output == "capsule_lengths" else "softmax"
        return cls(trial_id, backbone, representation, task, image_size, in_channels, num_outputs, b.mean, b.std,
                   head, b.gradcam_layer, tuple(b.cam_layers), b.cam, mask_dilation)

    def probs(self, outputs: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities of the network's outputs (softmax; capsule lengths normalised to sum to 1,
        the ranking an AUROC needs; one sigmoid per finding)."""
        if self.head == "sigmoid":
            return torch.sigmoid(outputs)
        if self.head == "capsule":
            return outputs / outputs.sum(1, keepdim=True).clamp_min(1e-8)
        return torch.softmax(outputs, 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        return cls(**{**d, "cam_layers": tuple(d.get("cam_layers", ()))})

    def write(self, trial_dir: TrialDir) -> None:
        trial_dir.file(CARD).write_text(json.dumps(self.to_dict(), indent=1))


def read_card(trial_dir: TrialDir) -> ModelCard | None:
    path = trial_dir.file(CARD)
    if not path.exists():
        return None
    try:
        return ModelCard.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:  # damaged or edited by hand
        raise UserError(f"trial {trial_dir.path.name}: {path} is not a readable model card ({_first_line(exc)})") \
            from None


def load_model(trial_dir: TrialDir, card: ModelCard | None = None) -> tuple[ModelCard, torch.nn.Module]:
    """The trial's card and its best-on-validation model, on the CPU, in eval mode; ``card`` replaces a missing
    ``model.json`` (a run of an older build). A missing model or card is an error naming the trial."""
    from cxrray.models import build_backbone

    card = read_card(trial_dir) or card
    if not trial_dir.model.exists():
        raise UserError(f"trial {trial_dir.path.name}: model missing ({trial_dir.model} does not exist)")
    if card is None:
        raise UserError(f"trial {trial_dir.path.name}: no model card ({trial_dir.file(CARD)})")
    name = trial_dir.path.name
    try:
        model, _ = build_backbone(card.backbone, card.num_outputs, card.in_channels, False, card.image_size)
    except (KeyError, ValueError, TypeError) as exc:  # an unknown backbone, a size it cannot take
        raise UserError(f"trial {name}: its card {trial_dir.file(CARD)} cannot be built ({_first_line(exc)})") \
            from None
    try:
        state = torch.load(trial_dir.model, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (truncated, not a torch file: torch raises several types)
        raise UserError(f"trial {name}: {trial_dir.model} cannot be read ({_first_line(exc)}); rerun the sweep to "
                        f"retrain it") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise UserError(f"trial {name}: {trial_dir.model} does not match its card {trial_dir.file(CARD)} (backbone "
                        f"{card.backbone}, {card.num_outputs} outputs: {_first_line(exc)})") from None
    return card, model.eval()


def _first_line(exc: BaseException) -> str:
    """An exception's message in one line of at most 200 characters (torch's state-dict errors run for pages)."""
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")
