"""FuCiTNet / COVID-SDNet class-inherent transformations: parts, fusion rule, a full trial and its resume."""


import numpy as np
import polars as pl
import pytest
import torch

from cxrray.config import DataRef, TrainRecipe, TrialContext, TrialSpec
from cxrray.data.images import read_image, read_mask, resize
from cxrray.data.manifest import load_manifest
from cxrray.data.tasks import TASKS
from cxrray.models import build_backbone
from cxrray.training.fucitnet import (
    ClassInherentGenerator,
    FuCiTConfig,
    FusedClassifier,
    Generators,
    PairHead,
    fuse,
    pair_targets,
    perceptual_network,
    stage1_epoch,
)
from cxrray.training.fucitnet_trial import FuCiTNet
from cxrray.training.heads import make_head
from cxrray.training.loop import InputPipeline
from cxrray.training.methods import METHODS
from cxrray.training.standard import Standard
from cxrray.training.worker import run_trial


def test_generator_is_five_residual_blocks_of_64_maps_and_keeps_the_image_size():
    g = ClassInherentGenerator(channels=1)
    assert len(g.blocks) == 5
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {m.out_channels for m in convs[:-1]} == {64} and convs[-1].out_channels == 1
    assert convs[0].kernel_size == (9, 9)
    assert g(torch.zeros(2, 1, 40, 36)).shape == (2, 1, 40, 36)
    # conv9x9 + 5 x (2 conv3x3 + 2 BN + PReLU) + conv3x3, with biases: the SRResNet body without upsampling
    expected = (81 * 64 + 64 + 1) + 5 * (2 * (9 * 64 * 64 + 64) + 2 * 128 + 1) + (9 * 64 + 1)
    assert sum(p.numel() for p in g.parameters()) == expected


def test_fusion_rule_sums_each_generators_own_classes():
    """K=2, classes (true class, generator) = N-, N+, P-, P+ (index k*2 + g). Rows: I- then I+ (generator-major)."""
    p_minus = torch.tensor([[0.10, 0.30, 0.50, 0.10]])  # G-(I): N- 0.1, P- 0.5 count; N+, P+ ignored
    p_plus = torch.tensor([[0.20, 0.20, 0.25, 0.35]])  # G+(I): N+ 0.2, P+ 0.35 count
    fused = fuse(torch.cat([p_minus, p_plus]), 2)
    neg, pos = 0.10 + 0.20, 0.50 + 0.35
    assert torch.allclose(fused, torch.tensor([[neg / (neg + pos), pos / (neg + pos)]]))
    certain = fuse(torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]), 2)  # P- on I-, P+ on I+
    assert torch.allclose(certain, torch.tensor([[0.0, 1.0]]))


def test_pair_targets_and_head_weights():
    y = torch.tensor([1, 0, 1])
    assert pair_targets(y, 2).tolist() == [2, 0, 2, 3, 1, 3]  # G- block then G+ block
    head = PairHead(TASKS.get("CL2"), [1.0, 3.0])
    assert head.num_outputs == 4 and head.weight_tensor().tolist() == [1.0, 1.0, 3.0, 3.0]
    batch = {"label": np.array(["CVP", "NOR"])}
    assert head.targets(batch).tolist() == [2, 0, 3, 1]


def test_fused_classifier_returns_log_probabilities_of_the_task_classes():
    torch.manual_seed(0)
    cfg = FuCiTConfig(features=8, blocks=1)
    clf, _ = build_backbone("basecnn", 4, 1, image_size=32)
    model = FusedClassifier(Generators(2, 1, cfg), clf, 2).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 2) and torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)


def test_only_single_label_tasks_take_fucitnet():
    for task in ("CL3H", "NIH14"):
        with pytest.raises(ValueError, match="single-label"):
            METHODS.get("fucitnet").validate(TrialSpec(study="s", data_id="d", representation="original",
                                                       backbone="basecnn", task=task, method="fucitnet"))
    fuc, std = METHODS.get("fucitnet"), METHODS.get("standard")
    assert isinstance(std, Standard) and isinstance(fuc, FuCiTNet) and fuc.config == FuCiTConfig()
    assert (std.multi_worker, std.asha, fuc.multi_worker, fuc.asha) == (True, True, False, False)
    with pytest.raises(ValueError, match="one worker per trial"):
        fuc.check_resources(num_workers=2, asha=False)
    with pytest.raises(ValueError, match="--asha"):
        fuc.check_resources(num_workers=1, asha=True)
    with pytest.raises(KeyError, match="valid: fucitnet, standard"):
        METHODS.get("fucitnett")


def _columns(manifest, size=32):
    df = load_manifest(manifest)
    return {"image": np.stack([resize(read_image(p), size) for p in df["image_path"]]),
            "mask": np.stack([resize(read_mask(p), size, nearest=True) for p in df["mask_path"]]),
            **{k: df[k].to_numpy() for k in ("label", "row", "patient_id", "source", "severity")}}


class _BrightnessGuide(torch.nn.Module):
    """A fixed guide: P(positive) rises with mean intensity (logit difference 8 x (mean - center)), even odds
    at ``center`` (the data's mean input), so both classes have room to move."""

    def __init__(self, center: float = 0.0):
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[-4.0], [4.0]]))
            self.linear.bias.copy_(torch.tensor([4.0 * center, -4.0 * center]))

    def forward(self, x):
        return self.linear(x.mean((1, 2, 3))[:, None])


def test_stage1_generators_stay_close_and_push_each_class_towards_itself(phantom_manifest):
    """Against a fixed guide that reads brightness, the positive generator brightens positives and the negative
    one darkens negatives (the lambda x CE term), while the MSE term keeps both near the identity."""
    cols = _columns(phantom_manifest, size=16)
    batches = [{k: v[i:i + 16] for k, v in cols.items()} for i in range(0, len(cols["row"]), 16)]
    task, cfg = TASKS.get("CL2"), FuCiTConfig(features=16, blocks=2, lam=1.0)
    head, pipe = make_head(task), InputPipeline("original")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        gens = Generators(2, 1, cfg)
        perceptual, init = perceptual_network(1, False, cfg)
    assert init == "random" and not any(p.requires_grad for p in perceptual.parameters())
    with torch.no_grad():
        center = float(torch.cat([pipe.to_inputs(b, torch.device("cpu")) for b in batches]).mean())
    guide = _BrightnessGuide(center)
    gen_opt = torch.optim.Adam(gens.parameters(), lr=2e-3)
    frozen = torch.optim.SGD(guide.parameters(), lr=0.0)
    g, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    history = [stage1_epoch(gens, guide, perceptual, batches, pipe, gen_opt, frozen, head, cfg, cpu, g)
               for _ in range(6)]
    assert history[-1]["gen_mse"] < 0.25 * history[0]["gen_mse"]
    gens.eval()
    with torch.no_grad():
        x = torch.cat([pipe.to_inputs(b, cpu) for b in batches])
        y = torch.as_tensor(np.concatenate([head.class_targets(b["label"]) for b in batches]))
        untransformed = float(torch.nn.functional.cross_entropy(guide(x), y))  # the guide on the images as they are
        shift_neg, shift_pos = ((gens.gens[k](x) - x).mean((1, 2, 3)) for k in (0, 1))
        residual = float(((gens(x) - x.repeat(2, 1, 1, 1)) ** 2).mean())
    assert history[-1]["gen_class"] < 0.5 * untransformed
    assert shift_pos[y == 1].mean() > 0.05 and shift_neg[y == 0].mean() < -0.05
    assert residual < 0.5 * float(x.var())  # inference mode too: most of the image survives the transformation


class _Dataset:
    """The slice of a Ray dataset a trial uses: deterministic ``iter_batches`` over numpy columns."""

    def __init__(self, cols):
        self.cols = cols

    def iter_batches(self, batch_size, batch_format="numpy", local_shuffle_buffer_size=None, local_shuffle_seed=None):
        n = len(self.cols["row"])
        order = np.random.default_rng(local_shuffle_seed).permutation(n) if local_shuffle_seed is not None \
            else np.arange(n)
        for i in range(0, n, batch_size):
            yield {k: v[order[i:i + batch_size]] for k, v in self.cols.items()}


class _Session:
    """An in-memory session: reports keep the last checkpoint; ``stop_after`` ends the attempt like a crash."""

    rank, device = 0, torch.device("cpu")

    def __init__(self, datasets, state=None, stop_after=None):
        self.datasets, self.state, self.stop_after, self.reports = datasets, state, stop_after, []

    def prepare_model(self, model):
        return model

    def dataset(self, split):
        return self.datasets[split]

    def load_state(self):
        return self.state

    def report(self, metrics, state):
        self.reports.append(metrics)
        if state is not None:
            self.state = state
        if self.stop_after is not None and metrics["epoch"] == self.stop_after:
            raise RuntimeError("worker lost")

    def finished(self):
        pass


def _trial(tmp_path, phantom_manifest, **session_kw):
    cols = _columns(phantom_manifest)
    idx = np.arange(len(cols["row"]))
    parts = {"train": idx % 5 < 3, "val": idx % 5 == 3, "test": idx % 5 == 4}
    datasets = {s: _Dataset({k: v[m] for k, v in cols.items()}) for s, m in parts.items()}
    spec = TrialSpec(study="covid_sdnet", data_id="d", representation="seg_crop", backbone="basecnn", image_size=32,
                     recipe=TrainRecipe(epochs=2, batch_size=16, lr=3e-3), method="fucitnet")
    trial_dir = tmp_path / "trials" / spec.trial_id
    config = TrialContext(spec=spec, run_dir=str(tmp_path), data=DataRef("d", "", (1.0, 1.0)), wandb="disabled",
                          project="t", checkpoint_every_s=0.0)
    session = _Session(datasets, **session_kw)
    cfg = FuCiTNet(FuCiTConfig(features=16, blocks=2, guide="basecnn"))
    return spec, trial_dir, config, session, cfg


def test_fucitnet_trial_writes_fused_predictions_and_resumes_to_the_same_result(tmp_path, phantom_manifest):
    """Stage 1 (2 epochs) then stage 2 (2 epochs); killed after the first stage-2 epoch, a new attempt goes on
    from the checkpoint and ends with exactly the predictions of an uninterrupted run."""
    spec, trial_dir, config, session, cfg = _trial(tmp_path / "a", phantom_manifest)
    run_trial(config, session, cfg)
    assert [r["stage"] for r in session.reports] == [1, 1, 2, 2]
    pred = pl.read_parquet(trial_dir / "predictions.parquet")
    assert set(pred["split"]) == {"val", "test"} and set(pred["trial_id"]) == {spec.trial_id}
    assert np.allclose(pred["prob_NCV"] + pred["prob_CVP"], 1, atol=1e-5)
    from cxrray.config import TrialDir
    from cxrray.records import TrialRecord

    record = TrialRecord.read(TrialDir(trial_dir))
    assert record.best_epoch in (2, 3) and record.method["stage1_best_epoch"] in (0, 1)
    assert "perceptual random" in record.init and record.trial_id == spec.trial_id
    saved = torch.load(trial_dir / "fucitnet.pt", weights_only=False)
    assert set(saved) == {"generators", "guide", "classifier"} and not (trial_dir / "model.pt").exists()

    _, trial_dir_b, config_b, crashed, _ = _trial(tmp_path / "b", phantom_manifest, stop_after=2)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_trial(config_b, crashed, cfg)
    assert not (trial_dir_b / "predictions.parquet").exists()
    _, _, _, retry, _ = _trial(tmp_path / "b", phantom_manifest, state=crashed.state)
    run_trial(config_b, retry, cfg)
    assert [r["epoch"] for r in retry.reports] == [3]
    assert "start_epoch=3" in (trial_dir_b / "attempts.log").read_text().splitlines()[-1]
    resumed = pl.read_parquet(trial_dir_b / "predictions.parquet")
    assert np.allclose(resumed["prob_CVP"].to_numpy(), pred["prob_CVP"].to_numpy(), atol=1e-6)
