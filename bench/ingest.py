"""Training-step rate fed by the full data path vs fed from tensors already in memory.

Full path (what a Ray Train fit does): Ray Data reading the shards (read_parquet -> decode; decoded once and kept
when the split fits ``shards.DECODED_BUDGET``, as the demo's does; also measured streamed every epoch) ->
``iter_batches`` with local shuffle and prefetch -> augmentation + representation batched on
the device -> ResNet-18 step. Baseline: the same steps on input tensors
prepared beforehand. Demo size: phantom, 64 px, batch 32, representation
``lungs_removed``. Goal (issue 4): ratio >= 0.90. Also reports images/s of the
augmentation + representation ops alone.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _busy import Others


def _steps(model, opt, inputs_iter, n_steps: int) -> float:
    """Images/s over ``n_steps`` training steps drawn from ``inputs_iter`` (after one warm-up step)."""
    loss_fn = nn.CrossEntropyLoss()
    x, y = next(inputs_iter)
    loss_fn(model(x), y).backward()
    seen, t = 0, time.perf_counter()
    for _ in range(n_steps):
        x, y = next(inputs_iter)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - t)


def run() -> list[dict]:
    import ray
    import ray.data

    others = Others()  # the CPU the rest of the machine takes while this runs

    from cxrray.data.ingest import ingest
    from cxrray.data.manifest import load_manifest
    from cxrray.data.phantom import write_phantom
    from cxrray.data.shards import read_split, train_split
    from cxrray.data.splits import assign_splits
    from cxrray.data.tasks import TASKS
    from cxrray.models import build_backbone
    from cxrray.representations.augment import AugmentConfig
    from cxrray.training.heads import make_head
    from cxrray.training.loop import InputPipeline

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    dev = torch.device("cpu")
    pipe = InputPipeline("lungs_removed", augment=AugmentConfig())
    head = make_head(TASKS.get("CL2"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = assign_splits(load_manifest(write_phantom(Path(tmp) / "ph", n_patients=160, seed=0)))
            ingest(manifest, Path(tmp) / "shards", image_size=64)
            ds = train_split(Path(tmp) / "shards" / "train")  # what a Ray Train fit reads (decoded once: small)
            lazy = read_split(Path(tmp) / "shards" / "train")  # streamed every pass (a split over the budget)
            n_steps = 2 * ds.count() // 32

            def ray_path(ds=ds):
                gen = torch.Generator().manual_seed(0)
                while True:
                    for b in ds.iter_batches(batch_size=32, batch_format="numpy", local_shuffle_buffer_size=128,
                                             drop_last=True):
                        yield pipe.to_inputs(b, dev, gen), head.targets(b)

            batches = list(ds.iter_batches(batch_size=32, batch_format="numpy", drop_last=True))
            gen = torch.Generator().manual_seed(0)
            ready = [(pipe.to_inputs(b, dev, gen), head.targets(b)) for b in batches]

            def memory_path():
                while True:
                    yield from ready

            t = time.perf_counter()
            ops = 0
            for b in batches * 3:
                pipe.to_inputs(b, dev, gen)
                ops += len(b["row"])
            ops_rate = ops / (time.perf_counter() - t)
            rates = {}
            for name, make in (("memory", memory_path), ("ray", ray_path), ("streamed", lambda: ray_path(lazy)),
                               ("memory2", memory_path)):
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    model, _ = build_backbone("resnet18", 2, 1, image_size=64)
                rates[name] = _steps(model, torch.optim.Adam(model.parameters(), 1e-3), make(), n_steps)
    finally:
        ray.shutdown()
    memory = max(rates["memory"], rates["memory2"])  # in-memory measured before and after: the faster one
    ratio = rates["ray"] / memory
    ok, busy = others.verdict(ratio >= 0.90)
    return [
        {"benchmark": "train step: Ray Data path / memory", "value": ratio, "unit": "x", "goal": ">= 0.90",
         "ok": ok, "detail": f"Ray Data {rates['ray']:.0f} img/s, in memory {memory:.0f} img/s "
                             f"(ResNet-18, 64 px, batch 32); {busy}"},
        {"benchmark": "train step: Ray Data streamed every epoch / memory", "value": rates["streamed"] / memory,
         "unit": "x", "goal": "info", "ok": True, "detail": f"{rates['streamed']:.0f} img/s: a split over "
                                                             f"shards.DECODED_BUDGET, each epoch's start-up paid"},
        {"benchmark": "augment + representation alone", "value": ops_rate, "unit": "img/s", "goal": "info",
         "ok": True, "detail": "64 px, batch 32, lungs_removed, CPU"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
