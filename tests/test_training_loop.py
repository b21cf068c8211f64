"""The pure training helpers, run without Ray on real phantom images."""

import numpy as np
import torch
from torch import nn

from cxrray.data.images import read_image, read_mask, resize
from cxrray.data.manifest import load_manifest
from cxrray.data.tasks import TASKS
from cxrray.models import build_backbone
from cxrray.representations.augment import AugmentConfig
from cxrray.training.heads import make_head
from cxrray.training.loop import InputPipeline, class_weights, evaluate, predict, train_epoch


def _batches(manifest, size=32, batch=16):
    df = load_manifest(manifest)
    imgs = np.stack([resize(read_image(p), size) for p in df["image_path"]])
    masks = np.stack([resize(read_mask(p), size, nearest=True) for p in df["mask_path"]])
    cols = {"image": imgs, "mask": masks, "label": df["label"].to_numpy(), "row": df["row"].to_numpy(),
            "patient_id": df["patient_id"].to_numpy(), "source": df["source"].to_numpy(),
            "severity": df["severity"].to_numpy()}
    return [{k: v[i:i + batch] for k, v in cols.items()} for i in range(0, len(df), batch)]


def test_training_reduces_loss_and_predicts_every_image(phantom_manifest):
    batches = _batches(phantom_manifest)
    task = TASKS.get("CL2")
    pipe, head = InputPipeline("original", augment=AugmentConfig()), make_head(task)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _ = build_backbone("basecnn", 2, 1, image_size=32)
    # 1e-3: the base CNN (no normalisation layers) oscillates at 3e-3 with the current torch/numpy builds
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    first = train_epoch(model, batches, pipe, opt, head, torch.device("cpu"), gen)["train_loss"]
    for _ in range(20):
        last = train_epoch(model, batches, pipe, opt, head, torch.device("cpu"), gen)["train_loss"]
    assert last < first * 0.8
    pred = predict(model, batches, pipe, head, torch.device("cpu"))
    n = sum(len(b["row"]) for b in batches)
    assert pred["prob"].shape == (n, 2) and np.allclose(pred["prob"].sum(1), 1, atol=1e-5)
    assert sorted(pred["row"].tolist()) == list(range(1, n + 1))
    metrics = evaluate(pred, head)
    assert metrics["auroc"] > 0.8  # confounded phantom: easy on the training images


def test_class_weights_inverse_frequency():
    w = class_weights(["NOR"] * 6 + ["CVP"] * 2 + ["OBP"] * 4, TASKS.get("CL3"))
    # counts NOR 6, NCP 4, CVP 2 -> inverse frequencies 1/6 : 1/4 : 1/2, mean-normalised
    expected = np.array([1 / 6, 1 / 4, 1 / 2])
    assert np.allclose(w, expected / expected.mean())


def test_tasks_map_labels():
    cl2, cl4 = TASKS.get("CL2"), TASKS.get("CL4")
    assert [cl2.class_index(x) for x in ("NOR", "OVP", "OBP", "CVP")] == [0, 0, 0, 1]
    assert [cl4.class_index(x) for x in ("NOR", "OBP", "OVP", "CVP")] == [0, 1, 2, 3]


def test_every_task_covers_its_labels():
    from cxrray.data.manifest import ALL_LABELS

    for name in TASKS.names():
        task = TASKS.get(name)
        if task.multilabel:
            continue
        assert set(task.labels) <= set(ALL_LABELS)
        assert sorted(task.class_index(x) for x in task.labels) == sorted(
            i for i, c in enumerate(task.classes) for _ in task.members[c])


def test_pneumonia_and_hierarchical_tasks():
    pneu, stage2 = TASKS.get("PNEU"), TASKS.get("CVP_NCP")
    assert [pneu.class_index(x) for x in ("NOR", "OTH", "PNA", "CVP")] == [0, 0, 1, 1]
    assert not stage2.includes("NOR") and stage2.class_index("CVP") == 1
    import pytest

    with pytest.raises(ValueError, match="not part of task CVP_NCP"):
        stage2.class_index("NOR")


def test_nih14_multilabel_targets_mask_unknowns():
    task = TASKS.get("NIH14")
    cols = {c: np.array(["0", "0", ""]) for c in task.finding_columns}
    cols["finding_Pneumonia"] = np.array(["1", "0", ""])
    y = task.multilabel_targets(cols)
    assert y.shape == (3, 14) and task.multilabel and task.includes("OTH")
    assert y[0, task.classes.index("Pneumonia")] == 1 and y[1].sum() == 0 and np.isnan(y[2]).all()


def test_masked_bce_ignores_unknown_findings():
    from cxrray.training.loop import masked_bce

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), 1.0, float("nan")]])
    loss = masked_bce(logits, targets)
    known = torch.tensor([[2.0, 0.5, 3.0]]), torch.tensor([[1.0, 0.0, 1.0]])
    assert torch.allclose(loss, nn.functional.binary_cross_entropy_with_logits(*known))
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0 and logits.grad[1, 2] == 0
    assert masked_bce(logits, torch.full((2, 3), float("nan"))).item() == 0.0


def test_amp_and_channels_last_paths_run(phantom_manifest):
    """The GPU settings (bf16 autocast, NHWC) also run on the CPU, so the code path is exercised here."""
    batches = _batches(phantom_manifest)[:2]
    pipe, head = InputPipeline("lungs_removed", channels_last=True), make_head(TASKS.get("CL2"))
    x = pipe.to_inputs(batches[0], torch.device("cpu"))
    assert x.is_contiguous(memory_format=torch.channels_last)
    model, _ = build_backbone("resnet18", 2, 1, image_size=32)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = train_epoch(model, batches, pipe, opt, head, torch.device("cpu"),
                      torch.Generator().manual_seed(0), amp=True)
    assert np.isfinite(out["train_loss"])
    pred = predict(model, batches, pipe, head, torch.device("cpu"), amp=True)
    assert pred["prob"].dtype == np.float32 and np.allclose(pred["prob"].sum(1), 1, atol=1e-3)
