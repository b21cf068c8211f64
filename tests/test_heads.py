"""Heads (softmax, multilabel, hierarchical), the class-balanced stream and best-epoch selection."""

import numpy as np
import pytest
import torch

from cxrray.data.tasks import TASKS
from cxrray.models import build_backbone
from cxrray.training.heads import HierarchicalHead, MultilabelHead, SoftmaxHead, make_head
from cxrray.training.loop import InputPipeline, evaluate, predict, rebalance, train_epoch
from cxrray.training.outputs import selection_key


def test_make_head_follows_the_task():
    assert isinstance(make_head(TASKS.get("CL3")), SoftmaxHead)
    assert isinstance(make_head(TASKS.get("NIH14")), MultilabelHead)
    head = make_head(TASKS.get("CL3H"))
    assert isinstance(head, HierarchicalHead) and head.num_outputs == 2
    with pytest.raises(ValueError, match="needs classes"):
        HierarchicalHead(TASKS.get("CL4"))


def test_hierarchical_targets_probs_and_loss():
    head = make_head(TASKS.get("CL3H"))
    t = head.targets({"label": np.array(["NOR", "OVP", "CVP", "OBP"])})
    assert t[:, 0].tolist() == [0, 1, 1, 1]
    assert torch.isnan(t[0, 1]) and t[1:, 1].tolist() == [0, 1, 0]  # stage 2 only on pneumonia images
    logits = torch.tensor([[-3.0, 5.0], [2.0, -1.0], [2.0, 3.0], [0.0, 0.0]], requires_grad=True)
    p = head.probs(logits)
    assert torch.allclose(p.sum(1), torch.ones(4))
    p0, p1 = torch.sigmoid(logits[:, 0]), torch.sigmoid(logits[:, 1])
    assert torch.allclose(p[:, 2], p0 * p1) and torch.allclose(p[:, 0], 1 - p0)
    head.loss(logits, t).backward()
    assert logits.grad[0, 1] == 0 and logits.grad[0, 0] != 0  # a normal image does not train stage 2
    # argmax of the composed probabilities: NOR, NCP, CVP right; the last (0.5, 0.25, 0.25) says NOR for OBP
    assert head.hits(logits.detach(), t) == (3, 4)
    assert head.hits(torch.tensor([[0.0, 0.0]]), head.targets({"label": np.array(["OBP"])})) == (0, 1)


def _tiny(labels, seed=0):
    rng = np.random.default_rng(seed)
    n = len(labels)
    img = rng.random((n, 32, 32), dtype=np.float32) * 0.2
    pos = np.isin(labels, ["CVP", "OVP", "OBP"])
    img[pos, 8:24, 8:24] += 0.6  # a bright square: learnable pneumonia
    img[np.asarray(labels) == "CVP", 12:20, 12:20] = 0.0  # with a dark core for COVID-19
    return {"image": img, "mask": np.ones((n, 32, 32), np.uint8), "label": np.asarray(labels),
            "row": np.arange(1, n + 1), "patient_id": np.arange(n).astype(str), "source": np.full(n, "x"),
            "severity": np.full(n, "")}


@pytest.mark.parametrize("task", ["CL3H", "NIH14"])
def test_structured_heads_learn_end_to_end(task):
    labels = ["NOR", "OVP", "CVP", "OBP"] * 8
    batch = _tiny(labels)
    if task == "NIH14":
        findings = {f"finding_{c}": np.full(len(labels), "0") for c in TASKS.get("NIH14").classes}
        findings["finding_Pneumonia"] = np.where(np.isin(labels, ["OVP", "OBP", "CVP"]), "1", "0")
        findings["finding_Hernia"] = np.full(len(labels), "")  # unknown everywhere: masked
        batch |= findings
    head = make_head(TASKS.get(task))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _ = build_backbone("basecnn", head.num_outputs, 1, image_size=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pipe, gen = InputPipeline("original"), torch.Generator().manual_seed(0)
    first = train_epoch(model, [batch], pipe, opt, head, torch.device("cpu"), gen)["train_loss"]
    for _ in range(60):
        last = train_epoch(model, [batch], pipe, opt, head, torch.device("cpu"), gen)["train_loss"]
    assert last < first * 0.5
    pred = predict(model, [batch], pipe, head, torch.device("cpu"))
    m = evaluate(pred, head)
    assert m["auroc"] > 0.9 and np.isfinite(m["loss"])
    if task == "NIH14":
        assert pred["target"].shape == (32, 14) and np.isnan(pred["target"][:, -1]).all()
    else:
        assert pred["prob"].shape == (32, 3) and np.allclose(pred["prob"].sum(1), 1, atol=1e-5)


def test_rebalance_gives_balanced_batches_from_a_skewed_stream():
    labels = np.array(["NOR"] * 90 + ["CVP"] * 10)
    rng = np.random.default_rng(0)
    order = rng.permutation(100)
    stream = [{"label": labels[order[i:i + 20]], "row": order[i:i + 20]} for i in range(0, 100, 20)]
    head = make_head(TASKS.get("CL2"))
    seen = []
    for _ in range(20):  # 20 epochs of the stream
        out = list(rebalance(iter(stream), head, torch.Generator().manual_seed(len(seen)), batch_size=16))
        assert all(len(b["label"]) == 16 for b in out[:-1])
        for b in out:
            assert set(b["row"].tolist()) <= set(range(100))
            assert all(labels[r] == lab for r, lab in zip(b["row"], b["label"], strict=True))  # rows keep their labels
            seen.extend(b["label"].tolist())
    share = np.mean(np.array(seen) == "CVP")
    assert 0.40 < share < 0.60, share  # 10 % in the data, about half in the batches
    a = list(rebalance(iter(stream), head, torch.Generator().manual_seed(3), 16))
    b = list(rebalance(iter(stream), head, torch.Generator().manual_seed(3), 16))
    assert all(np.array_equal(x["row"], y["row"]) for x, y in zip(a, b, strict=True))  # seeded: reproducible


def test_selection_key_prefers_auroc_or_loss_and_ranks_nan_last():
    good, nan = {"auroc": 0.8, "loss": 0.5}, {"auroc": float("nan"), "loss": 0.1}
    assert selection_key(good, "auroc") > selection_key(nan, "auroc")
    assert selection_key(nan, "loss") > selection_key(good, "loss")
    assert selection_key({"auroc": 0.8, "loss": 0.4}, "auroc") > selection_key(good, "auroc")
    with pytest.raises(ValueError, match="valid: auroc, loss"):
        selection_key(good, "acc")


def test_margin_head_for_capsule_lengths():
    """COVID-CAPS's margin loss: zero when the true capsule is long (>= 0.9) and the others short (<= 0.1);
    class weights weight images; probabilities are the normalised lengths."""
    import torch

    from cxrray.data.tasks import TASKS
    from cxrray.training.heads import MarginHead, make_head

    head = make_head(TASKS.get("CL2"), [1.0, 3.0], output="capsule_lengths")
    assert isinstance(head, MarginHead)
    t = torch.tensor([0, 1])
    assert head.loss(torch.tensor([[0.95, 0.05], [0.0, 0.92]]), t).item() == 0.0
    lengths = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    per = (0.9 - 0.5) ** 2 + 0.5 * (0.5 - 0.1) ** 2
    assert abs(head.loss(lengths, t).item() - per) < 1e-6  # same per-image loss, any weights
    wrong = torch.tensor([[0.0, 0.9], [0.9, 0.0]])
    assert head.loss(wrong, t).item() > 0.8
    assert torch.allclose(head.probs(torch.tensor([[0.2, 0.6]])), torch.tensor([[0.25, 0.75]]))
    with pytest.raises(ValueError, match="single-label"):
        make_head(TASKS.get("NIH14"), output="capsule_lengths")
