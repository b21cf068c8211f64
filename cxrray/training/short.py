"""Method ``short_<attribute>_<factor>``: shortcut testing (ShorT, Brown et al., Nat Commun 2023).

A standard fit with an auxiliary head that predicts a patient attribute (``sex``: F vs M; ``age_band``: under 40,
40-59, 60-74, 75 and over) from the backbone's penultimate features. Its gradient into the backbone is scaled by
``factor``: 1 trains the backbone to encode the attribute, 0 leaves the backbone alone (the head is a probe),
-1 trains it to hide the attribute (``attribute_loss``: a confusion loss, steadier than a reversed gradient).
A sweep over factors (``--methods short_sex`` expands to the factors of ``FACTORS``) gives models that encode
the attribute more or less; the analysis step ``shortcut_testing`` reads, per model, how strongly it encodes the
attribute against its fairness gap. If the gap moves with the encoding, the model's performance gap rests on the
attribute: a shortcut.

At the end each trial measures the encoding it ended with: a logistic-regression probe fitted on the kept model's
training and validation features, scored on its test features (AUROC; macro over age bands), stored as
``encoding_auroc`` with the attribute and the factor under ``short`` in ``trial.json`` (``TrialRecord.method``).
One worker per trial (the auxiliary head lives outside DDP). No Ray.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from cxrray.config import TrialContext, TrialSpec
from cxrray.records import ShortEncoding
from cxrray.registry import UserError
from cxrray.training.methods import METHOD_FAMILIES, METHODS, TrialMethod, TrialResult, unwrap
from cxrray.training.session import Session
from cxrray.training.standard import StandardTrial

ATTRIBUTES = {"sex": ("M", "F"), "age_band": ("<40", "40-59", "60-74", "75+")}  # class index = place here
MIN_GROUP_PATIENTS = 5  # patients of an attribute value below which its group is not estimable (ShorT needs two)
FACTORS = (-1.0, -0.5, 0.0, 0.5, 1.0)  # Brown et al.'s range, from hiding the attribute to encoding it
AUX_WEIGHT = 3.0  # the attribute loss against the task's: at 1 the factors hardly moved the phantom's encoding
PROBE_C = 0.05  # the encoding probe's inverse L2 strength: few validation images, many features
NAME = re.compile(r"short_(?P<attribute>[a-z_]+?)_(?P<factor>[-+]?\d+(?:\.\d+)?)")


def attribute_targets(attribute: str, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Class index of the attribute per image; -1 where it is unknown (left out of the auxiliary loss)."""
    if attribute == "sex":
        sex = np.asarray(batch.get("sex", np.full(len(batch["row"]), "")), dtype=str)
        return np.where(sex == "F", 1, np.where(sex == "M", 0, -1)).astype(np.int64)
    raw = np.asarray(batch.get("age", np.full(len(batch["row"]), "")), dtype=str)
    age = np.array([float(a) if a.replace(".", "", 1).isdigit() else np.nan for a in raw])
    band = np.digitize(age, [40, 60, 75])
    return np.where(np.isnan(age), -1, band).astype(np.int64)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient scaled by ``factor`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def attribute_loss(head: nn.Linear, features: torch.Tensor, a: torch.Tensor, factor: float) -> torch.Tensor:
    """The attribute head's loss on the images whose attribute is known (``a`` >= 0), and what it asks of the
    backbone. ``factor`` >= 0: the head's cross-entropy, its gradient into the features scaled by ``factor``
    (0: a probe; 1: the backbone learns to encode the attribute). ``factor`` < 0: the head learns to read the
    attribute from the features as they are, and the backbone is pushed, with weight -``factor``, to make that
    head's output uniform (the confusion loss of Alvi et al. 2018). On the phantom a reversed gradient (-1)
    raised the encoding a fresh probe reads (0.82-0.92 against 0.74 at 0): the backbone flips what the head
    chases instead of removing it."""
    known = a >= 0
    if not known.any():
        return features.sum() * 0.0
    if factor >= 0:
        return nn.functional.cross_entropy(head(_ScaleGradient.apply(features, factor)), a, ignore_index=-1)
    reading = nn.functional.cross_entropy(head(features.detach()), a, ignore_index=-1)
    fixed = nn.functional.linear(features[known], head.weight.detach(), head.bias.detach())
    confusion = -nn.functional.log_softmax(fixed, 1).mean()  # cross-entropy to the uniform distribution
    return reading - factor * confusion


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier layer whose input is the backbone's penultimate features."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{type(model).__name__} has no final linear layer: ShorT reads its penultimate features")
    return linears[-1]


class ShorTTrial(StandardTrial):
    """A standard fit plus the attribute head, its scaled gradient, and the encoding probe at the end."""

    def __init__(self, ctx: TrialContext, session: Session, attribute: str, factor: float) -> None:
        super().__init__(ctx, session)
        self.attribute, self.factor = attribute, factor
        head_in = last_linear(unwrap(self.model))
        self._features: list[torch.Tensor] = []
        head_in.register_forward_hook(lambda m, inp, out: self._features.append(inp[0]))
        self.aux = nn.Linear(head_in.in_features, len(ATTRIBUTES[attribute])).to(session.device)
        self.optimise(nn.ModuleList([unwrap(self.model), self.aux]))  # one optimiser and schedule for both
        self.config |= {"short_attribute": attribute, "short_factor": factor}

    def train_pass(self, batches: Iterable[dict[str, np.ndarray]], gen: torch.Generator) -> dict[str, float]:
        device, head = self.session.device, self.head
        self.model.train()
        self.aux.train()
        total, aux_total, n, correct, counted = 0.0, 0.0, 0, 0, 0
        for batch in batches:
            x = self.pipe.to_inputs(batch, device, gen)
            y = head.targets(batch).to(device)
            a = torch.as_tensor(attribute_targets(self.attribute, batch)).to(device)
            self._features.clear()
            logits = self.model(x)
            features = self._features[-1].flatten(1)
            loss = head.loss(logits.float(), y)
            aux = attribute_loss(self.aux, features, a, self.factor)
            (loss + AUX_WEIGHT * aux).backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            total, aux_total, n = total + float(loss.detach()) * len(y), aux_total + float(aux.detach()) * len(y), \
                n + len(y)
            hit, cnt = head.hits(logits.detach().float(), y)
            correct, counted = correct + hit, counted + cnt
        return {"train_loss": total / max(n, 1), "train_acc": correct / max(counted, 1),
                "train_attribute_loss": aux_total / max(n, 1)}

    def load(self, state: dict[str, Any]) -> int:
        self.aux.load_state_dict(state["aux"])
        return super().load(state)

    def state(self, epoch: int) -> dict[str, Any]:
        return super().state(epoch) | {"aux": self.aux.state_dict()}

    @torch.no_grad()
    def _split_features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features and attribute classes of a split's images (the kept model, eval mode)."""
        self.model.eval()
        feats, attrs = [], []
        for batch in self.session.dataset(split).iter_batches(batch_size=128, batch_format="numpy"):
            self._features.clear()
            self.model(self.pipe.to_inputs(batch, self.session.device))
            feats.append(self._features[-1].flatten(1).float().cpu().numpy())
            attrs.append(attribute_targets(self.attribute, batch))
        return np.concatenate(feats), np.concatenate(attrs)

    def encoding(self) -> float:
        """How well a linear probe reads the attribute from the kept model's features: fitted on the training and
        validation images, AUROC on test (macro one-vs-rest over age bands); NaN when a split lacks a class."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        fitted = [self._split_features(s) for s in ("train", "val")]
        xv, av = np.concatenate([f[0] for f in fitted]), np.concatenate([f[1] for f in fitted])
        xt, at = self._split_features("test")
        xv, av, xt, at = xv[av >= 0], av[av >= 0], xt[at >= 0], at[at >= 0]
        if len(set(av)) < 2 or len(set(at)) < 2 or not set(at) <= set(av):
            return float("nan")
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000)).fit(xv, av)
        prob = probe.predict_proba(xt)
        if prob.shape[1] == 2:
            return float(roc_auc_score(at, prob[:, 1]))
        return float(roc_auc_score(at, prob, multi_class="ovr", labels=probe.classes_))

    def finish(self) -> TrialResult:
        result = super().finish()  # the kept weights are in the model now
        encoding = self.encoding()
        result.scores["test_encoding_auroc"] = encoding
        result.meta["short"] = dataclasses.asdict(ShortEncoding(self.attribute, self.factor, encoding))
        return result


class ShorT(TrialMethod):
    """Shortcut testing: the standard fit plus an attribute head whose gradient into the backbone is scaled."""

    multi_worker = False  # the attribute head is not part of the DDP module
    task_kinds = frozenset({"single"})

    def __init__(self, attribute: str, factor: float) -> None:
        self.attribute, self.factor = attribute, factor

    def validate(self, spec: TrialSpec) -> None:
        super().validate(spec)
        from cxrray.models import BACKBONES

        if BACKBONES.get(spec.backbone).output == "capsule_lengths":
            raise UserError(f"method {self.name}: backbone {spec.backbone} has capsule outputs, no penultimate "
                            f"features for the attribute head")

    def cannot_estimate(self, rows: pl.DataFrame) -> str:
        """ShorT reads how a model's gap between the attribute's groups moves with its encoding: it needs two of
        the attribute's values, each of ``MIN_GROUP_PATIENTS`` patients or more."""
        columns = {c: np.asarray(rows[c].cast(pl.Utf8).fill_null("").to_list(), dtype=str)
                   for c in ("sex", "age") if c in rows.columns}
        target = attribute_targets(self.attribute, {"row": np.zeros(rows.height)} | columns)
        names = ATTRIBUTES[self.attribute]
        counts = {names[k]: rows.filter(pl.Series(target == k))["patient_id"].n_unique() for k in range(len(names))}
        if sum(n >= MIN_GROUP_PATIENTS for n in counts.values()) >= 2:
            return ""
        said = ", ".join(f"{v} {n}" for v, n in counts.items())
        return (f"{self.attribute} needs two values with at least {MIN_GROUP_PATIENTS} patients each; the manifest "
                f"has {said} (patients)")

    def build(self, ctx: TrialContext, session: Session) -> ShorTTrial:
        return ShorTTrial(ctx, session, self.attribute, self.factor)


@METHODS.factory("short_<attribute>_<factor> (ShorT; attribute sex or age_band, factor in [-1, 1])")
def _short(name: str) -> ShorT | None:
    m = NAME.fullmatch(name)
    if m is None or m["attribute"] not in ATTRIBUTES or not -1.0 <= float(m["factor"]) <= 1.0:
        return None
    method = ShorT(m["attribute"], float(m["factor"]))
    method.name = name
    return method


for _attribute in ATTRIBUTES:  # ``--methods short_sex`` is the factor sweep
    METHOD_FAMILIES[f"short_{_attribute}"] = tuple(f"short_{_attribute}_{f:g}" for f in FACTORS)
