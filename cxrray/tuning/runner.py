"""Run a list of trial specs on Ray Tune, each trial a Ray Train fit.

Ray 2.60 runs Train V2, where ``Tuner(TorchTrainer(...))`` is refused; the
working pattern (``launch_trials``) is a Tune *function* trainable that builds
a ``TorchTrainer`` and calls ``fit()``, forwarding metrics with
``TuneReportCallback``. That choice lives in this one module.

A trial is finished when ``trials/<trial_id>/predictions.parquet`` exists, so
re-running a sweep (after a crash, or with more cells) runs only what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cxrray.config import TrialSpec
from cxrray.training.outputs import FAULT_ENV, PREDICTIONS
from cxrray.training.tracking import summary_run
from cxrray.tuning.asha import STOPPED, EarlyStop, cell_scheduler, mark_stopped
from cxrray.tuning.prepare import PreparedData
from cxrray.tuning.study import Resources


@dataclass(frozen=True)
class SweepOutcome:
    finished: list[str]  # trial ids with predictions
    failed: list[str]
    skipped: list[str]  # already finished before this run
    predictions: pl.DataFrame
    results: pl.DataFrame
    stopped: tuple[str, ...] = ()  # hyper-parameter settings ASHA stopped early (no predictions, not failures)


def trial_dir(run_dir: Path, spec: TrialSpec) -> Path:
    return run_dir / "trials" / spec.trial_id


def is_finished(run_dir: Path, spec: TrialSpec) -> bool:
    """Done for good: predictions written, or stopped early by ASHA (never trained again)."""
    d = trial_dir(run_dir, spec)
    return (d / PREDICTIONS).exists() or (d / STOPPED).exists()


_SHARDS: dict[tuple[str, str], Any] = {}  # materialised shards kept by a reused Tune actor


def _read_splits(data: dict[str, Any], cache: bool) -> dict[str, Any]:
    """The run's shards as materialised Ray Datasets (cached across trials in one actor when ``cache``)."""
    import ray.data

    from cxrray.data.shards import read_split

    ray.data.DataContext.get_current().enable_progress_bars = False
    if not cache:
        return {s: read_split(Path(data["shard_dir"]) / s).materialize() for s in data["splits"]}
    keys = {(data["shard_dir"], s) for s in data["splits"]}
    for k in set(_SHARDS) - keys:  # keep one dataset's shards at a time
        del _SHARDS[k]
    for k in keys - set(_SHARDS):
        _SHARDS[k] = read_split(Path(k[0]) / k[1]).materialize()
    return {s: _SHARDS[(data["shard_dir"], s)] for s in data["splits"]}


def _trial_fn(config: dict[str, Any]) -> None:
    """Tune function trainable: one spec, trained inline or as one Ray Train fit."""
    from cxrray.training.worker import InlineSession, run_trial, train_loop_per_worker

    spec = TrialSpec.from_dict(config["spec"])
    ctx, res = config["ctx"], Resources(**config["resources"])
    data = ctx["data"][spec.data_id]
    loop_config = {"spec": config["spec"], "class_weights": data["class_weights"], "splits": tuple(data["splits"]),
                   "weights": ctx.get("weights"), "trial_dir": str(Path(ctx["run_dir"]) / "trials" / spec.trial_id),
                   "wandb": ctx["wandb"], "project": ctx["project"], "checkpoint_every_s": res.checkpoint_every_s}
    # Read the shards *before* any training starts: on a small machine the training workers hold
    # nearly every core and a read task could wait forever.
    datasets = _read_splits(data, cache=res.inline())
    if res.inline():
        run_trial(loop_config, InlineSession(datasets, Path(loop_config["trial_dir"]), res.use_gpu))
        return
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=res.num_workers, use_gpu=res.use_gpu,
                                     resources_per_worker={"CPU": res.cpus_per_worker}),
        run_config=RunConfig(name=spec.trial_id, storage_path=f"{ctx['storage']}/train",
                             callbacks=[TuneReportCallback()],
                             failure_config=FailureConfig(max_failures=res.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    trainer.fit()


def _spec_of(trial) -> TrialSpec:
    return TrialSpec.from_dict(trial.config["spec"])


def _trial_dirname(trial) -> str:
    spec = _spec_of(trial)
    return f"{spec.run_name}-{spec.trial_id}"


def status_line(trials: list, current, total: int, done: int, failed: int, best: tuple[float, str]) -> str:
    """'done 3 | running 1 | pending 4 | failed 0 | best so far: <run> val AUROC 0.912'.

    Tune creates grid trials lazily, so pending = total - done - failed - running."""
    running = [t.status for t in trials if t is not current].count("RUNNING")
    text = (f"done {done} | running {running} | pending {max(total - done - failed - running, 0)} | "
            f"failed {failed}")
    return text + (f" | best so far: {best[1]} val AUROC {best[0]:.3f}" if best[1] else "")


def _progress_callback(total: int, already_done: int, run_dir: str):
    """A Tune callback printing one line per epoch and per finished trial: what a person watching wants."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self) -> None:
            self.done, self.t0 = already_done, time.time()
            self.best, self.failed = (float("-inf"), ""), 0

        def _finished(self, trial, trials, status: str, extra: str = "") -> None:
            self.done += 1
            self.failed += status == "FAILED"
            auroc = (trial.last_result or {}).get("best_val_auroc")
            best = f" best val AUROC {auroc:.3f}" if isinstance(auroc, float) else ""
            print(f"[cxrray] {self.done}/{total} {status}: {_spec_of(trial).run_name}{best} "
                  f"({time.time() - self.t0:.0f} s elapsed){extra}", flush=True)
            if isinstance(auroc, float) and auroc == auroc and auroc > self.best[0]:
                self.best = (auroc, _spec_of(trial).run_name)
            line = status_line(trials, trial, total, self.done - self.failed, self.failed, self.best)
            print(f"[cxrray] {line}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            spec = _spec_of(trial)
            stage = f" (stage {result['stage']})" if "stage" in result else ""  # staged methods (FuCiTNet)
            print(f"[cxrray]   {spec.run_name} epoch {result.get('epoch', 0) + 1}/"
                  f"{result.get('epochs_total', spec.recipe.epochs)}{stage}: "
                  f"train loss {result.get('train_loss', float('nan')):.3f}, "
                  f"val AUROC {result.get('val_auroc', float('nan')):.3f} ({result.get('epoch_s', 0):.1f} s)",
                  flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            tdir = Path(run_dir) / "trials" / _spec_of(trial).trial_id
            stopped = (tdir / STOPPED).exists() and not (tdir / PREDICTIONS).exists()
            self._finished(trial, trials, "stopped early (ASHA)" if stopped else "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            src, dst = Path(trial.local_path) / "error.txt", Path(run_dir) / "trials" / _spec_of(trial).trial_id
            if src.exists():  # keep the traceback with the trial, not only in Ray's session folder
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst / "error.txt")
                src = dst / "error.txt"
            self._finished(trial, trials, "FAILED", f"; traceback in {src}")

    return Progress()


def launch_trials(specs: list[TrialSpec], ctx: dict[str, Any], resources: Resources, total: int,
                  early_stop: EarlyStop | None = None) -> None:
    """Run ``specs`` as one Tune experiment (the only place that touches Tune)."""
    from ray import tune

    scheduler = None
    if early_stop is not None:
        if not resources.inline():
            raise ValueError("ASHA early stopping needs one-worker inline trials (--launcher auto/inline): a Ray "
                             "Train fit running inside a Tune trial cannot be stopped between epochs")
        scheduler = cell_scheduler(specs, early_stop, _spec_of, lambda spec, result: mark_stopped(
            Path(ctx["run_dir"]) / "trials" / spec.trial_id, spec, result))

    # inline: the trial actor trains, so it holds the worker's resources; train: the worker group does.
    need = {"cpu": resources.cpus_per_worker, "gpu": int(resources.use_gpu)} if resources.inline() else {"cpu": 0.01}
    tuner = tune.Tuner(
        tune.with_resources(_trial_fn, need),
        param_space={"spec": tune.grid_search([s.to_dict() for s in specs]), "ctx": ctx,
                     "resources": resources.__dict__},
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent_trials, scheduler=scheduler,
                                    trial_name_creator=_trial_dirname, trial_dirname_creator=_trial_dirname,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=ctx["storage"],
                                  callbacks=[_progress_callback(total, total - len(specs), ctx["run_dir"])], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=resources.max_failures)),
    )
    tuner.fit()


def run_sweep(specs: list[TrialSpec], *, run_dir: str | Path, data: PreparedData | Mapping[str, PreparedData],
              resources: Resources = Resources(), wandb_mode: str = "offline", project: str = "cxrray",
              weights: str | None = None, storage: str | None = None,
              early_stop: EarlyStop | None = None) -> SweepOutcome:
    """Run every unfinished spec, then gather predictions and results from the trial folders.

    ``data``: the prepared dataset, or one per ``data_id`` when the specs read several
    (the phases of staged pretraining). ``weights``: a local ImageNet state-dict file
    for specs with ``pretrained`` (recorded as ``init=file:<name>``). ``storage``: where Ray keeps
    checkpoints (default ``<run_dir>/ray``); on a multi-node cluster a shared path (NFS) or a cloud URI
    (``s3://...``, ``gs://...``) that every node can reach. ``early_stop``: ASHA over the hyper-parameter
    axes, one bracket per protocol cell (protocol cells always finish).
    """
    run_dir = Path(run_dir).resolve()
    if len({s.trial_id for s in specs}) != len(specs):
        raise ValueError("two specs in the sweep are identical (same trial id)")
    by_id = {data.data_id: data} if isinstance(data, PreparedData) else dict(data)
    unknown = sorted({s.data_id for s in specs} - set(by_id))
    if unknown:
        raise ValueError(f"specs read data {unknown} that was not prepared (prepared: {sorted(by_id)})")
    skipped = [s.trial_id for s in specs if is_finished(run_dir, s)]
    todo = [s for s in specs if not is_finished(run_dir, s)]
    print(f"[cxrray] {len(specs)} trials: {len(skipped)} already finished, {len(todo)} to run", flush=True)
    if todo:
        ctx = {"run_dir": str(run_dir), "wandb": wandb_mode, "project": project,
               "storage": storage or str(run_dir / "ray"),
               "weights": str(Path(weights).resolve()) if weights else None,
               "data": {k: {"shard_dir": str(d.shard_dir.resolve()), "class_weights": d.class_weights,
                            "splits": list(d.splits)} for k, d in by_id.items()}}
        launch_trials(todo, ctx, resources, len(specs), early_stop)
    outcome = collect(specs, run_dir, skipped)
    log_study_summary(outcome, run_dir, wandb_mode, project)
    return outcome


def log_study_summary(outcome: SweepOutcome, run_dir: Path, wandb_mode: str, project: str) -> None:
    """One W&B run per study (id ``<study>-summary``) holding the results table and the status counts."""
    if wandb_mode == "disabled" or outcome.results.is_empty():
        return
    import wandb

    study = outcome.results["study"][0]
    run = summary_run(study, run_dir, wandb_mode, project)
    table = outcome.results.select([c for c in outcome.results.columns if outcome.results[c].dtype != pl.Null])
    run.log({"results": wandb.Table(dataframe=table.to_pandas())})
    run.summary.update({"finished": len(outcome.finished), "failed": len(outcome.failed),
                        "skipped": len(outcome.skipped)})
    run.finish()


def run_waves(waves: list[list[TrialSpec]], **kwargs: Any) -> SweepOutcome:
    """Run dependent waves in order (staged pretraining): wave k+1 starts from checkpoints of wave k.

    A spec whose upstream stage did not finish is not started; it is reported as failed
    (``blocked by <id>``) while every independent cell still runs. Keyword arguments go to ``run_sweep``.
    """
    run_dir = Path(kwargs["run_dir"]).resolve()
    done_before = [s.trial_id for w in waves for s in w if is_finished(run_dir, s)]
    for k, wave in enumerate(waves):
        ready = [s for s in wave if not s.init_from or (run_dir / "trials" / s.init_from / PREDICTIONS).exists()]
        for s in wave:
            if s not in ready:
                print(f"[cxrray] {s.run_name} ({s.trial_id}) blocked: its pretraining stage {s.init_from} "
                      f"did not finish", flush=True)
        if ready:
            print(f"[cxrray] wave {k + 1}/{len(waves)}: {len(ready)} trial(s)", flush=True)
            run_sweep(ready, **kwargs)
    return collect([s for w in waves for s in w], run_dir, done_before)


def collect(specs: list[TrialSpec], run_dir: Path, skipped: list[str] | None = None) -> SweepOutcome:
    """Gather per-trial predictions and a results table (spec fields + training metadata)."""
    preds, rows, finished, failed, stopped = [], [], [], [], []
    for s in specs:
        d = trial_dir(run_dir, s)
        if not (d / PREDICTIONS).exists() and (d / STOPPED).exists():
            stopped.append(s.trial_id)
            meta = json.loads((d / STOPPED).read_text())
            rows.append(s.flat() | {"trial_id": s.trial_id, "run_name": s.run_name,
                                    "status": f"stopped by ASHA after epoch {meta['epochs_done']}",
                                    "best_val_auroc": meta["best_val_auroc"]})
        elif (d / PREDICTIONS).exists():
            finished.append(s.trial_id)
            preds.append(pl.read_parquet(d / PREDICTIONS))
            meta = json.loads((d / "trial.json").read_text())
            rows.append(s.flat() | {"trial_id": s.trial_id, "run_name": s.run_name, "status": "finished",
                                    "init": meta["init"], "best_epoch": meta["best_epoch"],
                                    "best_val_auroc": meta["best_val_auroc"]} | meta.get("metrics", {}))
        else:
            failed.append(s.trial_id)
            blocked = s.init_from and not (run_dir / "trials" / s.init_from / PREDICTIONS).exists()
            err = d / "error.txt"
            last = err.read_text().strip().splitlines()[-1][:300] if err.exists() else ""
            rows.append(s.flat() | {"trial_id": s.trial_id, "run_name": s.run_name, "error": last,
                                    "status": f"blocked by {s.init_from}" if blocked else "failed"})
    predictions = pl.concat(preds, how="diagonal") if preds else pl.DataFrame()
    results = pl.DataFrame(rows, infer_schema_length=None)
    if not predictions.is_empty():
        predictions.write_parquet(run_dir / "predictions.parquet")
    results.write_parquet(run_dir / "results.parquet")
    return SweepOutcome(finished, failed, skipped or [], predictions, results, tuple(stopped))


def start_ray(run_dir: Path, *, num_cpus: int | None = None, wandb_mode: str = "offline",
              address: str | None = None, verbose_workers: bool = False) -> None:
    """Start (or join) Ray with W&B offline and temp files kept inside the run directory.

    Worker logs stay in Ray's session logs unless ``verbose_workers``; the driver
    prints one line per epoch and per finished trial instead.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local instance; a cluster brings its own
    os.environ["WANDB_MODE"] = wandb_mode  # must be set before ray.init: workers inherit it
    tmp = run_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"WANDB_MODE": wandb_mode, "TMPDIR": str(tmp), "WANDB_SILENT": "true"}
    env |= {k: v for k, v in os.environ.items() if k == FAULT_ENV}  # reliability tests only
    if ray.is_initialized():
        return
    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             runtime_env={"env_vars": env}, log_to_driver=verbose_workers, configure_logging=True,
             logging_level="WARNING")
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per epoch is the progress view
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
