"""What a trial needs from whoever runs it: a ``Session``.

Two implementations: ``TrainSession`` (a Ray Train worker of a DDP fit) and ``InlineSession`` (a one-worker
trial trained inside its reused Tune actor). Tests drive trials with in-memory sessions of the same shape.
Ray is imported only when a session is built.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn


class Batches(Protocol):
    """A split of the run's shards, as a trial reads it (a Ray Dataset, a shard iterator, or a test double)."""

    def iter_batches(self, *, batch_size: int, batch_format: str = "numpy", **kwargs: Any) -> Any: ...


class Session(Protocol):
    """Rank and device, model preparation (DDP wrapping), the splits, checkpointed per-epoch reports."""

    rank: int
    device: torch.device
    node_id: str  # the Ray node the session runs on ("" outside Ray)

    def prepare_model(self, model: nn.Module) -> nn.Module: ...

    def dataset(self, split: str) -> Batches: ...

    def load_state(self) -> dict[str, Any] | None:
        """The last checkpoint of this trial (a retry or a resumed sweep), or None for a fresh start."""

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """One finished epoch's metrics, with a checkpoint when ``state`` is given."""

    def finished(self) -> None:
        """The trial's outputs are written; release what only a resume needed."""


class TrainSession:
    """A Ray Train worker: rank, device, DDP wrapping, this worker's dataset shard, checkpointed reports."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self._train = ray.train
        self.node_id = ray.get_runtime_context().get_node_id()
        self.rank = ray.train.get_context().get_world_rank()
        self.device = ray.train.torch.get_device()
        self.prepare_model = ray.train.torch.prepare_model

    def dataset(self, split: str) -> Batches:
        return self._train.get_dataset_shard(split)

    def load_state(self) -> dict[str, Any] | None:
        ckpt = self._train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)

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

    def __init__(self, datasets: dict[str, Batches], resume_path: Path, use_gpu: bool) -> None:
        import ray
        import ray.tune

        self._tune, self._datasets, self._path = ray.tune, datasets, resume_path
        self.node_id = ray.get_runtime_context().get_node_id()  # recorded per attempt and in results
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def dataset(self, split: str) -> Batches:
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
