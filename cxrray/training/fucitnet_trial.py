"""One FuCiTNet trial (method ``fucitnet``): class-inherent generators, then the K x K classifier.

Runs on the same session as a standard trial (``worker.InlineSession`` / ``TrainSession``) and
leaves the same outputs (``outputs.write_outputs``): per-image *fused* probabilities of the task's
classes for val and test, so every analysis table (AUROC, severity accuracy, DeLong tests) reads a
FuCiTNet trial like any other. Epochs count across both stages (stage 1: the generators and their
guide; stage 2: the classifier), each checkpointed, so a retried or resumed trial goes on from its
last saved epoch. Selection uses validation data only: the best stage-1 epoch by the guide's
validation AUROC, the best stage-2 epoch by the recipe's ``select_by``. The weights are saved as
``fucitnet.pt`` (generators, guide, classifier), not ``model.pt``: Grad-CAM of a fused two-pass
model is not defined by the publications, so the saliency stage leaves these trials out.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from cxrray.config import TrialSpec
from cxrray.data.tasks import TASKS
from cxrray.models import BACKBONES, build_backbone
from cxrray.representations import out_channels
from cxrray.representations.augment import AugmentConfig
from cxrray.training.fucitnet import (
    FuCiTConfig,
    FusedClassifier,
    Generators,
    GuideScore,
    PairClassifier,
    PairHead,
    perceptual_network,
    stage1_epoch,
)
from cxrray.training.heads import SoftmaxHead, make_head
from cxrray.training.loop import InputPipeline, evaluate, make_optimizer, predict, train_epoch
from cxrray.training.outputs import EpochReporter, predictions_frame, selection_key, write_outputs
from cxrray.training.recipes import resolve_class_weights
from cxrray.training.tracking import Tracker


def check_fucitnet(spec: TrialSpec) -> None:
    """FuCiTNet needs one class label per image (a plain softmax task); raise naming the task otherwise."""
    task = TASKS.get(spec.task)
    if task.multilabel or task.hierarchical:
        raise ValueError(f"method fucitnet needs a single-label task (one generator per class); {spec.task} is "
                         f"{'multilabel' if task.multilabel else 'hierarchical'}")


def run_fucitnet_trial(config: dict[str, Any], session, cfg: FuCiTConfig) -> None:
    """Train stage 1 then stage 2 of one spec on ``session``, reporting every epoch; write fused predictions."""
    trial = _FuCiTTrial(config, session, cfg)
    start, spec = trial.resume(), trial.spec
    total, train_s = trial.stage1 + spec.recipe.epochs, 0.0
    with EpochReporter(config, session, spec, start, {"init": trial.init, "fucitnet": dataclasses.asdict(cfg)}
                       ) as report:
        for epoch in range(start, total):
            t0 = time.time()
            metrics = trial.epoch(epoch) | {"epoch": epoch, "epoch_s": time.time() - t0, "epochs_done": epoch + 1,
                                            "epochs_total": total}
            train_s += time.time() - t0
            report(epoch, metrics, lambda: trial.state(epoch))
    if session.rank == 0:
        trial.finish(report.tracker, train_s, tuple(config.get("splits", ("val", "test"))))
    session.finished()


class _FuCiTTrial:
    """The models, optimisers and best-on-validation states of one FuCiTNet trial."""

    def __init__(self, config: dict[str, Any], session, cfg: FuCiTConfig) -> None:
        self.spec = spec = TrialSpec.from_dict(config["spec"])
        check_fucitnet(spec)
        task, bdef, r = TASKS.get(spec.task), BACKBONES.get(spec.backbone), spec.recipe
        self.session, self.cfg, self.k, self.device = session, cfg, task.num_classes, session.device
        self.trial_dir = Path(config["trial_dir"])
        chans = out_channels(spec.representation)
        weights = resolve_class_weights(r, config["class_weights"]) if config["class_weights"] else None
        self.head = make_head(task, weights, r.label_smoothing)
        assert isinstance(self.head, SoftmaxHead)
        self.pair_head = PairHead(task, weights)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG state
            torch.manual_seed(spec.seed)
            gens = Generators(self.k, chans, cfg)
            guide, guide_init = build_backbone(cfg.guide, self.k, chans, spec.pretrained, spec.image_size)
            clf, clf_init = build_backbone(spec.backbone, self.k ** 2, chans, spec.pretrained, spec.image_size,
                                           weights=config.get("weights") if spec.pretrained else None)
            perceptual, perc_init = perceptual_network(chans, spec.pretrained, cfg)
        self.init = f"{clf_init}; guide {guide_init}; perceptual {perc_init}"
        self.gens, self.guide, self.clf = (session.prepare_model(m) for m in (gens, guide, clf))
        self.perceptual = perceptual.to(self.device)
        self.models = {"gens": self.gens, "guide": self.guide, "clf": self.clf}
        self.opts = {"gen_opt": torch.optim.Adam(self.gens.parameters(), lr=cfg.gen_lr,
                                                 weight_decay=cfg.gen_weight_decay),
                     "guide_opt": torch.optim.Adam(self.guide.parameters(), lr=cfg.guide_lr),
                     "clf_opt": make_optimizer(self.clf, r)}
        self.pipe = InputPipeline(spec.representation, bdef.mean, bdef.std,
                                  AugmentConfig(hflip=r.hflip) if r.augment else None)
        self.guide_score = GuideScore(self.gens, self.guide, self.k)  # views sharing the trained modules
        self.pair_model = PairClassifier(self.gens, self.clf)
        self.fused = FusedClassifier(self.gens, self.clf, self.k)
        self.stage1 = cfg.stage1_epochs or r.epochs
        self.best: dict[str, Any] = {"stage1": None, "stage2": None}
        self.gen = torch.Generator()

    def resume(self) -> int:
        """Load the last checkpoint, if any; returns the first epoch still to run."""
        state = self.session.load_state()
        if state is None:
            return 0
        for name, obj in (self.models | self.opts).items():
            obj.load_state_dict(state[name])
        self.best = state["best"]
        return state["epoch"] + 1

    def state(self, epoch: int) -> dict[str, Any]:
        return {name: obj.state_dict() for name, obj in (self.models | self.opts).items()} | {
            "epoch": epoch, "best": self.best}

    def _batches(self, split: str, epoch: int | None = None):
        ds, r = self.session.dataset(split), self.spec.recipe
        if epoch is None:
            return ds.iter_batches(batch_size=64, batch_format="numpy")
        return ds.iter_batches(batch_size=r.batch_size, batch_format="numpy",
                               local_shuffle_buffer_size=4 * r.batch_size, local_shuffle_seed=self.spec.seed + epoch)

    def epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of stage 1 (generators + guide) or stage 2 (K x K classifier); keeps the best state."""
        spec, head, device = self.spec, self.head, self.device
        self.gen.manual_seed(spec.seed * 1_000_003 + epoch)
        if epoch < self.stage1:
            o = self.opts
            metrics = stage1_epoch(self.gens, self.guide, self.perceptual, self._batches("train", epoch), self.pipe,
                                   o["gen_opt"], o["guide_opt"], head, self.cfg, device, self.gen)
            val = evaluate(predict(self.guide_score, self._batches("val"), self.pipe, head, device), head)
            if self.best["stage1"] is None or selection_key(val, "auroc") > selection_key(self.best["stage1"]["val"],
                                                                                          "auroc"):
                self.best["stage1"] = {"epoch": epoch, "val": val, "gens": copy.deepcopy(self.gens.state_dict()),
                                       "guide": copy.deepcopy(self.guide.state_dict())}
            return metrics | {f"val_{m}": v for m, v in val.items()} | {
                "stage": 1, "train_loss": metrics["guide_loss"], "train_acc": metrics["guide_acc"]}
        if epoch == self.stage1:  # stage 2 starts from the best generators of stage 1
            self.gens.load_state_dict(self.best["stage1"]["gens"])
        metrics = train_epoch(self.pair_model, self._batches("train", epoch), self.pipe,
                              self.opts["clf_opt"], self.pair_head, device, self.gen, amp=device.type == "cuda",
                              accum=spec.recipe.grad_accum)
        val = evaluate(predict(self.fused, self._batches("val"), self.pipe, head, device), head)
        select, best = spec.recipe.select_by, self.best["stage2"]
        if best is None or selection_key(val, select) > selection_key(best["val"], select):
            self.best["stage2"] = {"epoch": epoch, "val": val, "clf": copy.deepcopy(self.clf.state_dict())}
        return metrics | {f"val_{m}": v for m, v in val.items()} | {
            "stage": 2, "best_val_auroc": self.best["stage2"]["val"]["auroc"]}

    def finish(self, tracker: Tracker, train_s: float, splits: tuple[str, ...]) -> None:
        """Best generators and classifier (validation), fused predictions for val and test, outputs written."""
        best = self.best
        self.gens.load_state_dict(best["stage1"]["gens"])
        self.guide.load_state_dict(best["stage1"]["guide"])
        if best["stage2"] is not None:
            self.clf.load_state_dict(best["stage2"]["clf"])
        frames, scores = [], {}
        for split in (s for s in ("val", "test") if s in splits):
            pred = predict(self.fused, self._batches(split), self.pipe, self.head, self.device)
            frames.append(predictions_frame(pred, self.spec, split))
            scores |= {f"{split}_{m}": v for m, v in evaluate(pred).items()}
        stage2 = best["stage2"] or {"epoch": -1, "val": {"auroc": float("nan")}}
        meta = {"init": self.init, "best_epoch": stage2["epoch"], "best_val_auroc": stage2["val"]["auroc"],
                "stage1_best_epoch": best["stage1"]["epoch"], "stage1_val_auroc": best["stage1"]["val"]["auroc"],
                "train_s": train_s}
        weights = {"fucitnet.pt": {"generators": self.gens.state_dict(), "guide": self.guide.state_dict(),
                                   "classifier": self.clf.state_dict()}}
        write_outputs(self.trial_dir, self.spec, frames, scores, weights, meta, tracker)
