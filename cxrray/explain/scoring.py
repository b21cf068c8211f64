"""Many saved models scored on one test split that is read and decoded once.

The transfer matrix scores every saved model on every hide-and-seek representation of its test images. Done
per trial, each trial re-read and re-decoded its whole split and held it in memory (about 10 GB at 20,000
images of 224 px). A ``ScoreJob`` instead streams the split shard file by shard file (``LocalSplit``: a few
files decoded at a time, whatever the split's size), makes each representation of a batch once, and passes it
through every model of the job that takes it (each with its own normalisation). What comes back is the test
scores per (trial, representation), with the labels and patients in the same order. At paper scale
(``ScoreJob.sample``) a stated random sample of test patients is scored, the same for every model: the
matrix's intervals then show what that sample can tell. No Ray here:
``fanout.fan_out`` runs jobs in this process or as Ray tasks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxrray.data.shards import LocalSplit
from cxrray.explain.saliency import load_trial
from cxrray.registry import UserError
from cxrray.representations import InputPipeline, apply_representation, hide_seek_representations, out_channels

MODELS_PER_JOB = 16  # models one job holds at once (memory), each job reading its split once


@dataclass(frozen=True)
class ScoreJob:
    """Score ``trial_ids`` (whose test images are ``split_dir``) on every representation each one takes."""

    run_dir: str
    split_dir: str
    trial_ids: tuple[str, ...]
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": autocast (on a GPU)
    sample: tuple[str, ...] | None = None  # the test patients to score (all their images); None: every patient
    batch_size: int = 64


@dataclass(frozen=True)
class Scored:
    """A job's scores: per trial id, per representation, the positive-class-ready probabilities (N, classes),
    aligned with ``labels`` and ``patients`` (the split's rows in shard order); ``errors``: trial id -> why
    its model could not be loaded."""

    labels: np.ndarray
    patients: np.ndarray
    probs: dict[str, dict[str, np.ndarray]]
    errors: dict[str, str]


def patient_sample(split_dir: str | Path, patients: int, seed: int = 0) -> tuple[str, ...] | None:
    """``patients`` of the split's patients drawn at random (``seed``: every job and every analysis draws the
    same ones), from its shards' patient column alone; None when it has no more than that (all are scored)."""
    import pyarrow.parquet as pq

    files = sorted(Path(split_dir).glob("*.parquet"))
    every = sorted({str(p) for f in files for p in pq.read_table(f, columns=["patient_id"]).column(0).to_pylist()})
    if patients <= 0 or len(every) <= patients:
        return None
    return tuple(sorted(np.random.default_rng(seed).choice(every, patients, replace=False).tolist()))


def jobs_for(run_dir: str | Path, splits: dict[str, str], device: str = "cpu", precision: str = "fp32",
             workers: int = 1, patients: int = 0) -> list[ScoreJob]:
    """The jobs that score every trial of ``splits`` (trial id -> its test split): trials sharing a split go
    together, cut into ``workers`` jobs per split (so every worker has one) of at most ``MODELS_PER_JOB``; a split's
    sample of ``patients`` test patients (0: all) is drawn once, here, and handed to each of its jobs."""
    by_split: dict[str, list[str]] = {}
    for trial_id, split in splits.items():
        by_split.setdefault(split, []).append(trial_id)
    jobs = []
    for split, trials in by_split.items():
        size = min(max(-(-len(trials) // max(workers, 1)), 1), MODELS_PER_JOB)
        sample = patient_sample(split, patients)
        jobs += [ScoreJob(str(run_dir), split, tuple(trials[i:i + size]), device, precision, sample)
                 for i in range(0, len(trials), size)]
    return jobs


def score_models(job: ScoreJob) -> Scored:
    """Run the job: each model loaded once, the split streamed once, each representation made once per batch."""
    device = torch.device(job.device)
    models, errors = {}, {}
    for trial_id in job.trial_ids:
        try:
            spec, card, model = load_trial(Path(job.run_dir), trial_id)
        except UserError as exc:  # named in the transfer table, never dropped
            errors[trial_id] = str(exc)
            continue
        reps = tuple(r for r in hide_seek_representations()
                     if out_channels(r) == out_channels(spec.representation))
        models[trial_id] = (card, model.to(device), reps)
    needed = tuple(r for r in hide_seek_representations() if any(r in m[2] for m in models.values()))
    sample = None if job.sample is None else np.asarray(job.sample)
    probs: dict[str, dict[str, list[np.ndarray]]] = {t: {r: [] for r in m[2]} for t, m in models.items()}
    labels, patients = [], []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if job.precision == "bf16" \
        else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        split = LocalSplit(job.split_dir, stored_pixels=True)  # scaled where the models run
        for batch in (split.iter_batches(batch_size=job.batch_size) if models else ()):
            if sample is not None:
                keep = np.isin(np.asarray(batch["patient_id"]).astype(str), sample)
                if not keep.any():
                    continue
                batch = {k: np.asarray(v)[keep] for k, v in batch.items()}
            labels.append(np.asarray(batch["label"]).astype(str))
            patients.append(np.asarray(batch["patient_id"]).astype(str))
            image, mask = InputPipeline.tensors(batch, device)
            for rep in needed:
                seen = apply_representation(rep, image, mask)
                for trial_id, (card, model, reps) in models.items():
                    if rep in reps:
                        out = model((seen - card.mean) / card.std).float()
                        probs[trial_id][rep].append(card.probs(out).cpu().numpy())
    return Scored(np.concatenate(labels) if labels else np.array([], str),
                  np.concatenate(patients) if patients else np.array([], str),
                  {t: {r: np.concatenate(p) for r, p in reps.items()} for t, reps in probs.items()}, errors)
