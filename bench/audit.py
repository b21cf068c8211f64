"""The audit of an external model at 1,000 test images (issue 40): the time ``cxrray audit`` takes on this
machine, start to report, for a TorchScript CNN at 64 px, split into ingest and the scoring of every
representation (one read of the split) against scoring ``original`` alone in the same run (the price of the
four other representations).

    python bench/audit.py            # about a minute on 2 CPUs
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

IMAGES = 1000


def _model(path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 2)).eval()
    torch.jit.trace(net, torch.rand(1, 1, 64, 64)).save(str(path))


def run() -> list[dict]:
    import polars as pl

    from cxrray.data.phantom import write_phantom
    from cxrray.data.shards import LocalSplit
    from cxrray.models.external import ModelSpec, load_external
    from cxrray.representations import InputPipeline, apply_representation
    from cxrray.studies.audit import main

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_phantom(root / "data", n_patients=IMAGES // 2, images_per_patient=(2, 2), size=128,
                                 seed=1)
        _model(root / "model.ts")
        (root / "model.json").write_text(json.dumps({"form": "torchscript", "path": "model.ts", "image_size": 64}))
        t0 = time.perf_counter()
        code = main(["--manifest", str(manifest), "--positive", "CVP", "--model-spec", str(root / "model.json"),
                     "--store-size", "64", "--out", str(root / "audit")])
        total = time.perf_counter() - t0
        n = pl.read_parquet(root / "audit" / "analysis" / "audit_predictions.parquet")["row"].n_unique()
        split = next((root / "audit" / "shards").glob("*-64px")) / "test"
        model = load_external(ModelSpec.from_json(root / "model.json"))
        t1 = time.perf_counter()
        for batch in LocalSplit(str(split), stored_pixels=True).iter_batches(batch_size=64):
            image, mask = InputPipeline.tensors(batch, torch.device("cpu"))
            model.positive(apply_representation("original", image, mask))
        one = time.perf_counter() - t1
    return [{"benchmark": f"audit of {n} images (s)", "value": total, "unit": "s", "goal": "info", "ok": code == 0,
             "detail": f"ingest + dry run + 5 representations + verdicts + report; exit {code}"},
            {"benchmark": "scoring original alone (s)", "value": one, "unit": "s", "goal": "info", "ok": True,
             "detail": f"{n} images, 64 px, one representation (the other four cost the rest)"}]


if __name__ == "__main__":
    for row in run():
        print(row)
