"""Method ``standard``: one supervised fit of the backbone on the trial's representation.

Model selection uses the validation split only (``recipe.select_by``: best validation AUROC, ties by
lower loss, or lowest loss); the test split is read once, after training, for the final per-image
predictions. Plateau LR and early stopping follow the same selection key. Works for every task kind,
on one worker or as a DDP fit, and under ASHA.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from cxrray.config import TrialContext
from cxrray.data.tasks import TASKS
from cxrray.models import BACKBONES, build_backbone
from cxrray.representations import InputPipeline, out_channels
from cxrray.representations.augment import AugmentConfig
from cxrray.training.heads import Head, make_head
from cxrray.training.loop import make_optimizer, rebalance, train_epoch
from cxrray.training.methods import (
    Best,
    TrialMethod,
    TrialResult,
    copy_state,
    epoch_generator,
    predict_splits,
    register,
    train_batches,
    unwrap,
    validate_split,
)
from cxrray.training.recipes import resolve_class_weights
from cxrray.training.session import Session


def initial_model(ctx: TrialContext, head: Head) -> tuple[torch.nn.Module, str]:
    """The trial's network: from its pretraining stage (head replaced), a local file, ImageNet or random."""
    spec = ctx.spec
    chans = out_channels(spec.representation)
    if spec.init_from:
        stage = ctx.layout.trial(spec.init_from).model
        if not stage.exists():
            raise FileNotFoundError(f"pretraining stage {spec.init_from} has no model ({stage}); it must finish first")
        model, _ = build_backbone(spec.backbone, head.num_outputs, chans, False, spec.image_size,
                                  weights=str(stage), replace_head=True)
        return model, f"stage:{spec.init_from}"
    return build_backbone(spec.backbone, head.num_outputs, chans, spec.pretrained, spec.image_size,
                          weights=ctx.weights if spec.pretrained else None)


class StandardTrial:
    """The network, optimiser, LR schedule and best-on-validation state of one standard fit."""

    def __init__(self, ctx: TrialContext, session: Session) -> None:
        self.ctx, self.session, self.spec = ctx, session, ctx.spec
        spec, r = ctx.spec, ctx.spec.recipe
        task, bdef = TASKS.get(spec.task), BACKBONES.get(spec.backbone)
        weights = resolve_class_weights(r, list(ctx.data.class_weights)) if ctx.data.class_weights else None
        self.head = make_head(task, weights, r.label_smoothing, bdef.output)
        with torch.random.fork_rng(devices=[]):  # the network's own seed inside the driver's seeded build: its
            torch.manual_seed(spec.seed)  # init stays that of earlier versions, whatever a method builds after it
            model, init = initial_model(ctx, self.head)
        self.cuda = session.device.type == "cuda"  # GPU paths: channels_last memory layout and bfloat16 autocast
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)
        self.model = session.prepare_model(model)
        self.optimise(self.model)
        self.pipe = InputPipeline(spec.representation, bdef.mean, bdef.std,
                                  AugmentConfig(hflip=r.hflip) if r.augment else None, channels_last=self.cuda,
                                  mask_dilation=spec.mask_dilation)
        self.best, self.start, self.epochs = Best(), 0, r.epochs
        self.config: dict[str, Any] = {"init": init}
        self.init = init

    def optimise(self, module: torch.nn.Module) -> None:
        """The recipe's optimiser and plateau schedule over ``module``'s parameters (a method that trains more than
        the network, such as ShorT's attribute head, passes both)."""
        r = self.spec.recipe
        self.optimizer = make_optimizer(module, r)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=r.plateau_factor, patience=max(r.plateau_patience - 1, 0)) \
            if r.plateau_patience else None

    def load(self, state: dict[str, Any]) -> int:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.best, self.start = Best.from_state(state["best"]), state["epoch"] + 1
        return self.start

    def epoch(self, epoch: int) -> dict[str, Any]:
        spec, r, rank = self.spec, self.spec.recipe, self.session.rank
        gen = epoch_generator(spec, rank, epoch)
        batches = train_batches(self.session, spec, epoch, audit=self.ctx.trial_dir if epoch == self.start else None)
        if r.balanced:
            batches = rebalance(batches, self.head, gen, r.batch_size)
        metrics = self.train_pass(batches, gen)
        val = validate_split(self.model, self.session, self.pipe, self.head, amp=self.cuda)
        self.best.offer(epoch, val, r.select_by, copy_state(self.model))
        if self.scheduler is not None:
            self.scheduler.step(val["loss"])
        stop = bool(r.early_stop) and epoch - self.best.epoch >= r.early_stop  # same decision on every rank
        return metrics | {f"val_{k}": v for k, v in val.items()} | {
            "best_val_auroc": self.best.val["auroc"], "lr": self.optimizer.param_groups[0]["lr"], "stopped": stop}

    def train_pass(self, batches: Iterable[dict[str, np.ndarray]], gen: torch.Generator) -> dict[str, float]:
        """One epoch's pass over the training batches (a method adding a loss overrides it)."""
        return train_epoch(self.model, batches, self.pipe, self.optimizer, self.head, self.session.device, gen,
                           amp=self.cuda, accum=self.spec.recipe.grad_accum)

    def state(self, epoch: int) -> dict[str, Any]:
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None, "epoch": epoch,
                "best": self.best.to_state()}

    def finish(self) -> TrialResult:
        """Reload the best-on-validation weights (early stopping keeps them too), predict val and test."""
        if self.best.state is not None:
            unwrap(self.model).load_state_dict(self.best.state)
        frames, scores = predict_splits(self.model, self.session, self.pipe, self.head, self.spec,
                                        self.ctx.data.splits)
        return TrialResult(frames, scores, {self.ctx.trial_dir.model.name: unwrap(self.model).state_dict()},
                           {"init": self.init, "best_epoch": self.best.epoch,
                            "best_val_auroc": self.best.val.get("auroc", -1.0), "best_val": self.best.val})


@register("standard")
class Standard(TrialMethod):
    """One supervised fit of the backbone: every task kind, one or several workers, ASHA."""

    def build(self, ctx: TrialContext, session: Session) -> StandardTrial:
        return StandardTrial(ctx, session)

