"""Method ``fucitnet``: class-inherent generators, then the K x K classifier (FuCiTNet / COVID-SDNet).

A peer of ``standard``: the generic driver (``worker.run_trial``) runs it on the same session and
leaves the same outputs: per-image *fused* probabilities of the task's
classes for val and test, so every analysis table (AUROC, severity accuracy, DeLong tests) reads a
FuCiTNet trial like any other. Epochs count across both stages (stage 1: the generators and their
guide; stage 2: the classifier), each checkpointed, so a retried or resumed trial goes on from its
last saved epoch. Selection uses validation data only: the best stage-1 epoch by the guide's
validation AUROC, the best stage-2 epoch by the recipe's ``select_by``. The weights are saved as
``fucitnet.pt`` (generators, guide, classifier), not ``model.pt``: Grad-CAM of a fused two-pass
model is not defined by the publications, so the saliency stage leaves these trials out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from cxrray.config import TrialContext
from cxrray.data.tasks import TASKS
from cxrray.models import BACKBONES, build_backbone
from cxrray.representations import InputPipeline, out_channels
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
from cxrray.training.loop import make_optimizer, train_epoch
from cxrray.training.methods import (
    Best,
    TrialMethod,
    TrialResult,
    copy_state,
    epoch_generator,
    predict_splits,
    register,
    train_batches,
    validate_split,
)
from cxrray.training.recipes import resolve_class_weights
from cxrray.training.session import Session


@register("fucitnet", FuCiTConfig())
class FuCiTNet(TrialMethod):
    """FuCiTNet with its settings (``FuCiTConfig``): single-label tasks (one generator per class), one worker
    per trial (DDP over three models is not built), no ASHA (two stages are not one comparable fit); its weights
    are ``fucitnet.pt``, which the saliency stage does not explain."""

    multi_worker, asha, task_kinds = False, False, frozenset({"single"})

    def __init__(self, config: FuCiTConfig) -> None:
        self.config = config

    def build(self, ctx: TrialContext, session: Session) -> _FuCiTTrial:
        return _FuCiTTrial(ctx, session, self.config)


class _FuCiTTrial:
    """The models, optimisers and best-on-validation states of one FuCiTNet trial."""

    def __init__(self, ctx: TrialContext, session: Session, cfg: FuCiTConfig) -> None:
        self.ctx, self.spec = ctx, ctx.spec
        spec = ctx.spec
        task, bdef, r = TASKS.get(spec.task), BACKBONES.get(spec.backbone), spec.recipe
        self.session, self.cfg, self.k, self.device = session, cfg, task.num_classes, session.device
        chans = out_channels(spec.representation)
        weights = resolve_class_weights(r, list(ctx.data.class_weights)) if ctx.data.class_weights else None
        head = make_head(task, weights, r.label_smoothing)
        assert isinstance(head, SoftmaxHead)
        self.head = head
        self.pair_head = PairHead(task, weights)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG state
            torch.manual_seed(spec.seed)
            gens = Generators(self.k, chans, cfg)
            guide, guide_init = build_backbone(cfg.guide, self.k, chans, spec.pretrained, spec.image_size)
            clf, clf_init = build_backbone(spec.backbone, self.k ** 2, chans, spec.pretrained, spec.image_size,
                                           weights=ctx.weights if spec.pretrained else None)
            perceptual, perc_init = perceptual_network(chans, spec.pretrained, cfg)
        self.init = f"{clf_init}; guide {guide_init}; perceptual {perc_init}"
        self.gens = session.prepare_model(gens)  # the Generators (wrapped by DDP on several workers)
        self.guide, self.clf = session.prepare_model(guide), session.prepare_model(clf)
        self.perceptual = perceptual.to(self.device)
        self.models = {"gens": self.gens, "guide": self.guide, "clf": self.clf}
        self.opts = {"gen_opt": torch.optim.Adam(self.gens.parameters(), lr=cfg.gen_lr,
                                                 weight_decay=cfg.gen_weight_decay),
                     "guide_opt": torch.optim.Adam(self.guide.parameters(), lr=cfg.guide_lr),
                     "clf_opt": make_optimizer(self.clf, r)}
        self.pipe = InputPipeline(spec.representation, bdef.mean, bdef.std,
                                  AugmentConfig(hflip=r.hflip) if r.augment else None,
                                  mask_dilation=spec.mask_dilation)
        self.guide_score = GuideScore(self.gens, self.guide, self.k)  # views sharing the trained modules
        self.pair_model = PairClassifier(self.gens, self.clf)
        self.fused = FusedClassifier(self.gens, self.clf, self.k)
        self.stage1 = cfg.stage1_epochs or r.epochs
        self.epochs = self.stage1 + r.epochs
        self.stage1_best, self.stage2_best = Best(), Best()
        self.config = {"init": self.init, "fucitnet": dataclasses.asdict(cfg)}

    def load(self, state: dict[str, Any]) -> int:
        for name, obj in (self.models | self.opts).items():
            obj.load_state_dict(state[name])
        self.stage1_best, self.stage2_best = Best.from_state(state["stage1"]), Best.from_state(state["stage2"])
        return state["epoch"] + 1

    def state(self, epoch: int) -> dict[str, Any]:
        return {name: obj.state_dict() for name, obj in (self.models | self.opts).items()} | {
            "epoch": epoch, "stage1": self.stage1_best.to_state(), "stage2": self.stage2_best.to_state()}

    def epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of stage 1 (generators + guide) or stage 2 (K x K classifier); keeps the best state."""
        spec, head, device = self.spec, self.head, self.device
        gen = epoch_generator(spec, self.session.rank, epoch)
        if epoch < self.stage1:
            o = self.opts
            metrics = stage1_epoch(self.gens, self.guide, self.perceptual, train_batches(self.session, spec, epoch),
                                   self.pipe, o["gen_opt"], o["guide_opt"], head, self.cfg, device, gen)
            val = validate_split(self.guide_score, self.session, self.pipe, head, batch_size=64)
            self.stage1_best.offer(epoch, val, "auroc", lambda: {"gens": copy_state(self.gens)(),
                                                                 "guide": copy_state(self.guide)()})
            return metrics | {f"val_{m}": v for m, v in val.items()} | {
                "stage": 1, "train_loss": metrics["guide_loss"], "train_acc": metrics["guide_acc"]}
        if epoch == self.stage1:  # stage 2 starts from the best generators of stage 1
            self.gens.load_state_dict(self.stage1_best.kept["gens"])
        metrics = train_epoch(self.pair_model, train_batches(self.session, spec, epoch), self.pipe,
                              self.opts["clf_opt"], self.pair_head, device, gen, amp=device.type == "cuda",
                              accum=spec.recipe.grad_accum)
        val = validate_split(self.fused, self.session, self.pipe, head, batch_size=64)
        self.stage2_best.offer(epoch, val, spec.recipe.select_by, copy_state(self.clf))
        return metrics | {f"val_{m}": v for m, v in val.items()} | {
            "stage": 2, "best_val_auroc": self.stage2_best.val["auroc"]}

    def finish(self) -> TrialResult:
        """Best generators and classifier (validation), fused predictions for val and test."""
        s1, s2 = self.stage1_best, self.stage2_best
        self.gens.load_state_dict(s1.kept["gens"])
        self.guide.load_state_dict(s1.kept["guide"])
        if s2.state is not None:
            self.clf.load_state_dict(s2.state)
        frames, scores = predict_splits(self.fused, self.session, self.pipe, self.head, self.spec,
                                        self.ctx.data.splits, batch_size=64)
        meta = {"init": self.init, "best_epoch": s2.epoch, "best_val_auroc": s2.val.get("auroc", float("nan")),
                "stage1_best_epoch": s1.epoch, "stage1_val_auroc": s1.val["auroc"]}
        weights = {"fucitnet.pt": {"generators": self.gens.state_dict(), "guide": self.guide.state_dict(),
                                   "classifier": self.clf.state_dict()}}
        return TrialResult(frames, scores, weights, meta)
