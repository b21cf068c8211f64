"""The model-based analysis where the trials ran (issue 28, item 1): saliency and the transfer matrix as Ray tasks
over the smoke sweep's 2-CPU instance give the tables an in-process analysis gives; the transfer scoring reads
each test split once for all its models; bf16 scores rank the images as float32 scores do (near ties
aside: at most two positive-negative pairs of the smoke test set ranked otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cxrray.analysis.transfer import transfer_rows
from cxrray.config import RunLayout
from cxrray.explain import scoring
from cxrray.explain.fanout import Placement, fan_out, in_processes
from cxrray.explain.scoring import jobs_for, score_models
from cxrray.records import TrialRecord
from cxrray.stats.interval import auroc_interval

ROOT = Path(__file__).resolve().parents[1]


def _splits(out: Path) -> dict[str, str]:
    layout = RunLayout(out)
    ids = pl.read_csv(out / "analysis" / "trial_aurocs.csv")["trial_id"].to_list()
    return {t: str(layout.shards_of(TrialRecord.read(layout.trial(t)).spec) / "test") for t in ids}


def test_ray_tasks_and_one_process_give_the_same_model_based_tables(smoke_run, tmp_path):
    out, proc = smoke_run  # the sweep's own analysis ran saliency and transfer as Ray tasks (2 CPUs)
    assert "Transfer matrix: 2 model(s)" in proc.stdout
    here = tmp_path / "again"
    shutil.copytree(out, here, ignore=shutil.ignore_patterns("cache", "ray", "wandb", "tmp"))
    again = subprocess.run([sys.executable, "-m", "cxrray.analysis", str(here), "--workers", "1"],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for name in ("transfer_matrix", "saliency_in_lungs", "saliency_per_image"):
        ray_tasks, in_process = (pl.read_csv(d / "analysis" / f"{name}.csv") for d in (out, here))
        assert ray_tasks.height > 0 and ray_tasks.columns == in_process.columns, name
        for column in ray_tasks.columns:  # ROAD sums many perturbed scores: a Ray task's one thread adds them in
            a, b = ray_tasks[column], in_process[column]  # another order (4e-5 here; its interval is 0.004 wide)
            if column.startswith("road"):
                assert np.allclose(a.to_numpy(), b.to_numpy(), atol=1e-3, equal_nan=True), (name, column)
            else:
                assert a.equals(b), (name, column)


def test_one_job_reads_a_split_once_for_all_its_models(smoke_run, monkeypatch):
    out, _ = smoke_run
    splits = _splits(out)
    assert len(set(splits.values())) == 1 and len(splits) == 2  # both trials test on the same split
    jobs = jobs_for(out, splits)
    assert len(jobs) == 1 and set(jobs[0].trial_ids) == set(splits)
    assert [len(j.trial_ids) for j in jobs_for(out, splits, workers=2)] == [1, 1]  # one per worker
    opened: list[str] = []
    real = scoring.LocalSplit

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, split_dir, *a, **k):
            opened.append(str(split_dir))
            super().__init__(split_dir, *a, **k)

    monkeypatch.setattr(scoring, "LocalSplit", Counting)
    scored = score_models(jobs[0])
    assert opened == [jobs[0].split_dir]  # one read of the split for both models and all five representations
    assert {t: sorted(r) for t, r in scored.probs.items()} == {
        t: sorted(("original", "lungs_isolated", "lungs_removed", "lungs_framed", "lungs_boxed_out")) for t in splits}
    stored = pl.read_csv(out / "analysis" / "trial_aurocs.csv")
    for tid in splits:  # the diagonal is the trial's own stored test AUROC
        record = TrialRecord.read(RunLayout(out).trial(tid))
        own = next(r for r in transfer_rows(record, scored) if r["test"] == record.spec.representation)
        assert abs(own["auroc"] - stored.filter(pl.col("trial_id") == tid)["auroc"][0]) < 1e-6


def test_bf16_scores_rank_the_test_images_as_float32_does(smoke_run):
    out, _ = smoke_run
    job = jobs_for(out, _splits(out))[0]
    fp32 = score_models(job)
    bf16 = score_models(type(job)(**{**job.__dict__, "precision": "bf16"}))
    y = fp32.labels == "CVP"  # the smoke sweep's task, CL2: COVID-19 vs the rest
    for tid, reps in fp32.probs.items():
        for rep, p in reps.items():
            a = auroc_interval(y, p[:, 1], fp32.patients)
            b = auroc_interval(y, bf16.probs[tid][rep][:, 1], bf16.patients)
            flipped = abs(a.auc - b.auc) * a.n_pos * a.n_neg  # positive-negative pairs ranked otherwise
            assert flipped <= 2 + 1e-9 and abs(a.auc - b.auc) < (a.hi - a.lo) / 4, (tid, rep, a, b)


def test_without_ray_the_jobs_run_in_a_pool_of_processes_and_give_the_same_tables(smoke_run, tmp_path):
    """An install without Ray (the lent GPU machine has none): ``--workers 2`` runs saliency and transfer in two
    spawned processes of this machine; the tables are the Ray tasks' (ROAD to 1e-3, as above)."""
    out, _ = smoke_run
    here = tmp_path / "noray"
    shutil.copytree(out, here, ignore=shutil.ignore_patterns("cache", "ray", "wandb", "tmp"))
    hidden = ("import sys; sys.modules['ray'] = None; from cxrray.analysis.__main__ import main; "
              f"sys.exit(main([{str(here)!r}, '--workers', '2']))")
    proc = subprocess.run([sys.executable, "-c", hidden], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (here / "ray").exists() and "analysis step 8/15 transfer" in proc.stdout
    for name in ("transfer_matrix", "saliency_in_lungs"):
        ray_tasks, pooled = (pl.read_csv(d / "analysis" / f"{name}.csv") for d in (out, here))
        assert ray_tasks.height > 0 and ray_tasks.columns == pooled.columns, name
        for column in ray_tasks.columns:
            a, b = ray_tasks[column], pooled[column]
            if column.startswith("road"):
                assert np.allclose(a.to_numpy(), b.to_numpy(), atol=1e-3, equal_nan=True), (name, column)
            else:
                assert a.equals(b), (name, column)


def _pid_and_threads(job: int) -> tuple[int, int, str]:
    return job, os.getpid(), os.environ.get("OMP_NUM_THREADS", "")


def test_in_processes_keeps_job_order_and_uses_other_processes():
    got = in_processes(_pid_and_threads, [5, 6, 7], 2)
    assert [j for j, _, _ in got] == [5, 6, 7] and os.getpid() not in {p for _, p, _ in got}
    assert {t for _, _, t in got} == {"1"}  # one BLAS thread a worker
    assert in_processes(abs, [-3, 1, -2], 2) == [3, 1, 2]
    assert in_processes(abs, [-3, 1], 2, gpu=True) == [3, 1]  # GPU jobs: one device, in order, here


def test_fan_out_keeps_job_order_and_runs_in_process_with_one_worker():
    assert fan_out(abs, [-3, 1, -2], 1) == [3, 1, 2]
    assert (Placement(2).device, Placement(2).precision, Placement(2).scorers) == ("cpu", "fp32", 2)
    on_gpu = Placement(16, gpus=1)  # the lent machine: saliency on 16 CPUs, the scoring on its one GPU
    assert (on_gpu.device, on_gpu.precision, on_gpu.scorers, on_gpu.workers) == ("cuda", "fp32", 1, 16)


@pytest.mark.parametrize("workers", [0, -1])
def test_the_analysis_refuses_fewer_than_one_worker(workers, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cxrray.analysis", str(tmp_path), "--workers", str(workers)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"python -m cxrray.analysis: error: --workers {workers} is out of range: " \
        "[1, 100000] (workers)"
    assert not list(tmp_path.iterdir())  # refused before the run folder's lock was taken


def test_a_patient_sample_scores_all_images_of_the_same_patients_for_every_model(smoke_run):
    out, _ = smoke_run
    splits = _splits(out)
    full = score_models(jobs_for(out, splits)[0])
    one, two = (score_models(j) for j in jobs_for(out, splits, workers=2, patients=3))  # one model each
    drawn = set(one.patients)
    assert len(drawn) == 3 and drawn == set(two.patients) < set(full.patients)  # the same 3 for both jobs
    chosen = np.isin(full.patients, list(drawn))
    assert sorted(one.patients) == sorted(full.patients[chosen])  # every image of a drawn patient
    for part in (one, two):
        for tid, reps in part.probs.items():
            for rep, p in reps.items():
                assert np.allclose(np.sort(p[:, 1]), np.sort(full.probs[tid][rep][chosen, 1]), atol=1e-6)


@pytest.mark.parametrize(("model_seeds", "kept", "note"), [(1, [3, 3], "; the models of seed 3 (of 3 seeds)"),
                                                           (2, [3, 3, 5], "; the models of seeds 3, 5 (of 3 seeds)"),
                                                           (0, [3, 3, 5, 7], "")])
def test_the_model_based_steps_load_the_models_of_the_first_seeds(model_seeds, kept, note, tmp_path):
    from cxrray.analysis.steps import AnalysisOptions, LoadedRun

    aurocs = pl.DataFrame({"trial_id": ["a", "b", "c", "d"], "seed": [5, 3, 7, 3]})
    run = LoadedRun(RunLayout(tmp_path), pl.DataFrame(), pl.DataFrame(), aurocs, aurocs, "representation", 4,
                    AnalysisOptions(model_seeds=model_seeds))
    assert sorted(run.model_trials()["seed"].to_list()) == kept and run.model_seeds_note() == note
