#!/usr/bin/env python
"""Does memory stay flat as the dataset grows? Phantoms of N and 8N images through ingest (the sweep's
``prepare_data``: 256 px sources to 128 px shards) and one epoch of a real inline trial (Ray Tune, Ray Data
streaming its shards), on a local Ray whose object store is capped well below the dataset size.

Per size it prints: ingest img/s (and per CPU, next to Ray's published read + resize figure, about 140-175
img/s per vCPU), peak object-store use, bytes spilled, peak RSS of the driver and of the Ray worker processes
(the trial and the readers), and the trial's epoch time. It ends with one line::

    scale: memory ratio 8N/N = X, spilled Y MiB

X: the larger of the object-store and worker-RSS peak ratios (goal <= 1.2); Y: bytes spilled at 8N (goal 0).

    python bench/scale.py                  # N = 1000 (about 11 minutes on 2 CPUs)
    python bench/scale.py --n 300          # quicker
Each size runs in a fresh process (its own Ray instance), so nothing carries over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY_IMG_PER_VCPU = (140, 175)  # Ray's published image ingest (read + resize) per vCPU
STORE_MB = 100  # the object-store cap: far below 8N decoded images
GOAL_PER_CPU = 250  # issue 41: ingest above Ray's best published figure

sys.path.insert(0, str(Path(__file__).parent))
from _busy import Others  # noqa: E402  (bench/ is not a package)


class Sampler(threading.Thread):
    """Every 0.2 s: object-store bytes in use, the largest RSS among Ray's worker processes, and every file Ray
    spilled (its spill folder: a spilled file is deleted once read back, so each is counted at its largest)."""

    def __init__(self, spill_dir: Path) -> None:
        super().__init__(daemon=True)
        self.store, self.worker_rss, self.stop = 0, 0, threading.Event()
        self.spill_dir, self.spilled, self.by_title = spill_dir, {}, {}

    def run(self) -> None:
        import psutil
        import ray

        total = ray.cluster_resources().get("object_store_memory", 0)
        while not self.stop.is_set():
            free = ray.available_resources().get("object_store_memory", total)
            self.store = max(self.store, int(total - free))
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if p.info["memory_info"] and ("ray::" in cmd or "default_worker.py" in cmd):
                    rss = p.info["memory_info"].rss
                    self.worker_rss = max(self.worker_rss, rss)
                    title = cmd.split()[0] if cmd.startswith("ray::") else "idle worker"
                    self.by_title[title] = max(self.by_title.get(title, 0), rss)
            for f in self.spill_dir.rglob("*") if self.spill_dir.exists() else ():
                with contextlib.suppress(FileNotFoundError):  # a spill file removed while listed
                    self.spilled[f] = max(self.spilled.get(f, 0), f.stat().st_size) if f.is_file() else 0
            time.sleep(0.2)

    def spilled_mib(self) -> float:
        return sum(self.spilled.values()) / 2**20


def one_size(n_images: int, workdir: Path) -> dict:
    """Generate, ingest and train one epoch at ``n_images``; the figures as a dict."""
    import polars as pl
    import ray

    from cxrray.config import TrainRecipe
    from cxrray.data.phantom import write_phantom
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import run_sweep
    from cxrray.tuning.study import Resources, SweepOptions, hide_seek_specs

    manifest = write_phantom(workdir / "ph", n_patients=max(n_images // 2, 12), seed=0, size=256)
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    images = pl.read_csv(manifest).height
    from cxrray.tuning.runner import QUIET

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.update(QUIET)
    spill = workdir / "spill"
    ray.init(num_cpus=2, object_store_memory=STORE_MB * 1024**2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", _system_config={"object_spilling_config": json.dumps(
                 {"type": "filesystem", "params": {"directory_path": str(spill)}})})
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    sampler = Sampler(spill)
    sampler.start()
    try:
        t0 = time.perf_counter()
        data = prepare_data(manifest, workdir / "run", image_size=128, task="CL2")
        ingest_s = time.perf_counter() - t0
        store_ingest, rss_ingest = sampler.store, sampler.worker_rss
        spec = hide_seek_specs(data_id=data.data_id, representations=["lungs_removed"], backbones=["basecnn"],
                               image_size=128, recipe=TrainRecipe(epochs=1, batch_size=32))
        t0 = time.perf_counter()
        run_sweep(spec, run_dir=workdir / "run", data=data,
                  options=SweepOptions(resources=Resources(checkpoint_every_s=1e9), wandb_mode="disabled"))
        epoch_s = time.perf_counter() - t0
    finally:
        sampler.stop.set()
        ray.shutdown()
    return {"images": images, "ingest_s": ingest_s, "ingest_img_s": images / ingest_s,
            "ingest_img_s_per_cpu": images / ingest_s / 2, "store_peak_mib": sampler.store / 2**20,
            "store_peak_ingest_mib": store_ingest / 2**20, "worker_rss_peak_mib": sampler.worker_rss / 2**20,
            "worker_rss_ingest_mib": rss_ingest / 2**20, "spilled_mib": sampler.spilled_mib(), "trial_s": epoch_s,
            "rss_by_process_mib": {k: v / 2**20 for k, v in sorted(sampler.by_title.items())},
            "driver_rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(n: int) -> dict[int, dict]:
    """N and 8N, each in a fresh process."""
    out = {}
    for size in (n, 8 * n):
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([sys.executable, __file__, "--one", str(size), "--workdir", tmp],
                                  capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("SCALE ")), None)
            if proc.returncode or line is None:
                raise RuntimeError(f"scale run at {size} images failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
            out[size] = json.loads(line[len("SCALE "):])
    return out


def report(rows: dict[int, dict]) -> tuple[float, float, list[str]]:
    (_, small), (_, big) = sorted(rows.items())
    lines = [f"{'images':>7} {'ingest s':>9} {'img/s':>7} {'/CPU':>6} {'store MiB':>10} {'spill MiB':>10} "
             f"{'worker RSS':>11} {'driver RSS':>11} {'trial s':>8}"]
    for r in (small, big):
        lines.append(f"{r['images']:7d} {r['ingest_s']:9.1f} {r['ingest_img_s']:7.1f} {r['ingest_img_s_per_cpu']:6.1f} "
                     f"{r['store_peak_mib']:10.1f} {r['spilled_mib']:10.1f} {r['worker_rss_peak_mib']:11.1f} "
                     f"{r['driver_rss_peak_mib']:11.1f} {r['trial_s']:8.1f}")
    ratio = max(big["store_peak_mib"] / max(small["store_peak_mib"], 1e-9),
                big["worker_rss_peak_mib"] / max(small["worker_rss_peak_mib"], 1e-9))
    lines.append(f"Ray's published image ingest: {RAY_IMG_PER_VCPU[0]}-{RAY_IMG_PER_VCPU[1]} img/s per vCPU "
                 f"(read + resize); here {big['ingest_img_s_per_cpu']:.0f} per CPU (read, resize, mask, encode, "
                 f"write)")
    lines.append(f"scale: memory ratio 8N/N = {ratio:.2f}, spilled {big['spilled_mib']:.0f} MiB")
    return ratio, big["spilled_mib"], lines


def run() -> list[dict]:
    """``make bench`` rows. N = 500: the smallest N whose validation split fills an evaluation batch of 128
    images, so that the larger first batch is not read as growth with N."""
    others = Others()
    rows = measure(500)
    ratio, spilled, lines = report(rows)
    big = rows[max(rows)]
    ok, busy = others.verdict(big["ingest_img_s_per_cpu"] >= GOAL_PER_CPU)
    return [{"benchmark": "scale: memory 8N / N (N = 500)", "value": ratio, "unit": "x", "goal": "<= 1.2",
             "ok": ratio <= 1.2 and spilled == 0, "detail": lines[-1] + f"; store cap {STORE_MB} MiB"},
            {"benchmark": "scale: ingest per CPU (8N)", "value": big["ingest_img_s_per_cpu"], "unit": "img/s",
             "goal": f">= {GOAL_PER_CPU}", "ok": ok,
             "detail": f"Ray's figure {RAY_IMG_PER_VCPU[0]}-{RAY_IMG_PER_VCPU[1]}; {busy}"}]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="the smaller size in images (the larger is 8N)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size in this process
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.one:
        print("SCALE " + json.dumps(one_size(args.one, args.workdir)), flush=True)
        return 0
    rows = measure(args.n)
    _, _, lines = report(rows)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
