"""The Ray Train worker: read this worker's shard, train, report; rank 0 writes predictions.

Model selection uses the validation split only (best validation AUROC, ties
by lower loss); the test shard is read once, after training, for the final
per-image predictions. Each epoch reports a checkpoint, so a retried or
resumed trial continues from its last finished epoch.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrray.config import TrialSpec
from cxrray.data.tasks import TASKS
from cxrray.models import BACKBONES, build_backbone
from cxrray.representations import out_channels
from cxrray.representations.augment import AugmentConfig
from cxrray.training.fucitnet_trial import run_fucitnet_trial
from cxrray.training.heads import Head, make_head
from cxrray.training.loop import InputPipeline, evaluate, make_optimizer, predict, rebalance, train_epoch
from cxrray.training.methods import METHODS
from cxrray.training.outputs import EpochReporter, maybe_inject_fault, predictions_frame, selection_key, write_outputs
from cxrray.training.recipes import resolve_class_weights
from cxrray.training.tracking import Tracker


def _initial_model(spec: TrialSpec, head: Head, trial_dir: Path, weights: str | None):
    """The trial's network: from its pretraining stage (head replaced), a local file, ImageNet or random."""
    chans = out_channels(spec.representation)
    if spec.init_from:
        stage = trial_dir.parent / spec.init_from / "model.pt"
        if not stage.exists():
            raise FileNotFoundError(f"pretraining stage {spec.init_from} has no model ({stage}); it must finish first")
        model, _ = build_backbone(spec.backbone, head.num_outputs, chans, False, spec.image_size,
                                  weights=str(stage), replace_head=True)
        return model, f"stage:{spec.init_from}"
    return build_backbone(spec.backbone, head.num_outputs, chans, spec.pretrained, spec.image_size,
                          weights=weights if spec.pretrained else None)


def _checkpoint_state(ckpt_dir: str) -> dict[str, Any]:
    return torch.load(Path(ckpt_dir) / "state.pt", map_location="cpu", weights_only=False)


class TrainSession:
    """What a trial needs from Ray Train: rank, device, DDP wrapping, dataset shards, checkpointed reports."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self._train = ray.train
        self.rank = ray.train.get_context().get_world_rank()
        self.device = ray.train.torch.get_device()
        self.prepare_model = ray.train.torch.prepare_model

    def dataset(self, split: str):
        return self._train.get_dataset_shard(split)

    def load_state(self) -> dict[str, Any] | None:
        ckpt = self._train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return _checkpoint_state(d)

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is None:
            self._train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / "state.pt")
            self._train.report(metrics, checkpoint=self._train.Checkpoint.from_directory(d))

    def finished(self) -> None:
        """Ray Train keeps its checkpoints under the run's storage; nothing to clean here."""


class InlineSession:
    """A one-worker trial trained inside its Tune actor (``launcher="inline"``).

    Tune reuses the actor for the next trial, so torch, the models and the shards stay loaded:
    no worker group to start per trial. The epoch checkpoint lives in the trial folder
    (``resume.pt``, replaced atomically), which serves both Tune's retries and a resumed sweep.
    A scheduler STOP (ASHA) arrives as ``SystemExit`` from ``report``.
    """

    rank = 0

    def __init__(self, datasets: dict[str, Any], trial_dir: Path, use_gpu: bool) -> None:
        import ray.tune

        self._tune, self._datasets, self._path = ray.tune, datasets, trial_dir / "resume.pt"
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def dataset(self, split: str):
        return self._datasets[split]

    def load_state(self) -> dict[str, Any] | None:
        return torch.load(self._path, map_location="cpu", weights_only=False) if self._path.exists() else None

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, self._path)
        self._tune.report(metrics)

    def finished(self) -> None:
        self._path.unlink(missing_ok=True)  # model.pt and the predictions hold what is worth keeping


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: spec, class_weights, trial_dir, wandb, project."""
    run_trial(config, TrainSession())


def run_trial(config: dict[str, Any], session) -> None:
    """Train one spec on ``session`` (``TrainSession`` or ``InlineSession``), reporting every epoch."""
    spec = TrialSpec.from_dict(config["spec"])
    method = METHODS.get(spec.method)
    if method is not None:  # a staged method (FuCiTNet) trains its own models, same session and outputs
        run_fucitnet_trial(config, session, method)
        return
    task, bdef = TASKS.get(spec.task), BACKBONES.get(spec.backbone)
    rank, device = session.rank, session.device
    trial_dir = Path(config["trial_dir"])
    r = spec.recipe
    weights = resolve_class_weights(r, config["class_weights"]) if config["class_weights"] else None
    head = make_head(task, weights, r.label_smoothing, bdef.output)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG state
        torch.manual_seed(spec.seed)
        model, init = _initial_model(spec, head, trial_dir, config.get("weights"))
    cuda = device.type == "cuda"  # GPU paths: channels_last memory layout and bfloat16 autocast
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    model = session.prepare_model(model)
    optimizer = make_optimizer(model, r)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=r.plateau_factor,
                                                           patience=max(r.plateau_patience - 1, 0)) \
        if r.plateau_patience else None
    pipe = InputPipeline(spec.representation, bdef.mean, bdef.std,
                         AugmentConfig(hflip=r.hflip) if r.augment else None, channels_last=cuda)
    start, best = 0, {"val_auroc": -1.0, "val_loss": float("inf"), "epoch": -1, "state": None}
    state = session.load_state()
    if state is not None:
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start, best = state["epoch"] + 1, state["best"]
    gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + rank)
    train_shard, val_ds = session.dataset("train"), session.dataset("val")
    train_s = 0.0
    with EpochReporter(config, session, spec, start, {"init": init}) as report:
        for epoch in range(start, r.epochs):
            t0 = time.time()
            gen.manual_seed(spec.seed * 1_000_003 + rank * 7919 + epoch)  # resumable: seed per epoch
            batches = train_shard.iter_batches(batch_size=r.batch_size, batch_format="numpy",
                                               local_shuffle_buffer_size=4 * r.batch_size,
                                               local_shuffle_seed=spec.seed + epoch)
            if epoch == start:  # an audit trail: which manifest rows trained this model, per worker
                batches = _recording(batches, trial_dir / f"train_rows.rank{rank}.txt")
            if r.balanced:
                batches = rebalance(batches, head, gen, r.batch_size)
            metrics = train_epoch(model, batches, pipe, optimizer, head, device, gen, amp=cuda, accum=r.grad_accum)
            val = evaluate(predict(model, val_ds.iter_batches(batch_size=128, batch_format="numpy"), pipe, head,
                                   device, amp=cuda), head)
            metrics |= {f"val_{k}": v for k, v in val.items()} | {"epoch": epoch, "epoch_s": time.time() - t0,
                                                                   "epochs_done": epoch + 1}
            if best["state"] is None or selection_key(val, r.select_by) > selection_key(
                    {"auroc": best["val_auroc"], "loss": best["val_loss"]}, r.select_by):
                best = {"val_auroc": val["auroc"], "val_loss": val["loss"], "epoch": epoch,
                        "state": copy.deepcopy(_unwrap(model).state_dict())}
            if scheduler is not None:
                scheduler.step(val["loss"])
            stop = bool(r.early_stop) and epoch - best["epoch"] >= r.early_stop  # same decision on every rank
            metrics |= {"best_val_auroc": best["val_auroc"], "lr": optimizer.param_groups[0]["lr"], "stopped": stop}
            train_s += time.time() - t0
            report(epoch, metrics, lambda: {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                                            "scheduler": scheduler.state_dict() if scheduler else None,
                                            "epoch": epoch, "best": best})
            if stop:  # early stopping: the best-on-validation weights are restored in _finish
                break
    maybe_inject_fault(spec, trial_dir)  # also when a resumed attempt had no epoch left to run
    if rank == 0:
        _finish(model, best, pipe, head, device, spec, init, trial_dir, report.tracker,
                config.get("splits", ("val", "test")), session, train_s)
    session.finished()


def _recording(batches, path: Path):
    """Pass batches through, writing the manifest rows they hold to ``path`` at the end."""
    rows = []
    for b in batches:
        rows.extend(int(x) for x in b["row"])
        yield b
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(map(str, rows)) + "\n")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _finish(model: nn.Module, best: dict[str, Any], pipe: InputPipeline, head: Head, device: torch.device,
            spec: TrialSpec, init: str, trial_dir: Path, tracker: Tracker, splits: tuple[str, ...],
            session, train_s: float) -> None:
    """Reload the best-on-validation weights, predict val and test (a pretraining phase may have no
    test split), write them atomically. ``train_s``: seconds in this attempt's training loops."""
    if best["state"] is not None:
        _unwrap(model).load_state_dict(best["state"])
    frames, scores = [], {}
    for split in (s for s in ("val", "test") if s in splits):
        ds = session.dataset(split)
        pred = predict(model, ds.iter_batches(batch_size=128, batch_format="numpy"), pipe, head, device)
        frames.append(predictions_frame(pred, spec, split))
        scores |= {f"{split}_{k}": v for k, v in evaluate(pred).items()}
    write_outputs(trial_dir, spec, frames, scores, {"model.pt": _unwrap(model).state_dict()},
                  {"init": init, "best_epoch": best["epoch"], "best_val_auroc": best["val_auroc"], "train_s": train_s},
                  tracker)
