"""Shortcut testing (ShorT, issue 30 item 5): the method scales the attribute head's gradient into the backbone,
trains, resumes and records the encoding it ended with; the analysis reads a slope of the gap on the encoding with
one interval, whose operating characteristics are simulated here (false claims, coverage). On the phantom (slow)
none planted gives "no dependence"; a planted sex shortcut is found with 20 models."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from test_fucitnet import _Dataset, _Session

from cxrray.analysis.shortcut_testing import MIN_MODELS, SLOPE_MARGIN, balance_gap, cell_table, slope_verdict
from cxrray.config import DataRef, TrainRecipe, TrialContext, TrialDir, TrialSpec
from cxrray.training.methods import METHODS, expand_methods
from cxrray.training.short import _ScaleGradient, attribute_targets


@pytest.mark.parametrize("factor", [-1.0, -0.5, 0.0, 1.0])
def test_the_attribute_gradient_reaches_the_backbone_scaled_by_the_factor(factor):
    features = torch.randn(6, 4, requires_grad=True)
    head = torch.nn.Linear(4, 2)
    loss = torch.nn.functional.cross_entropy(head(_ScaleGradient.apply(features, factor)), torch.arange(6) % 2)
    loss.backward()
    plain = torch.autograd.grad(torch.nn.functional.cross_entropy(head(features), torch.arange(6) % 2),
                                features)[0]
    assert torch.allclose(features.grad, factor * plain, atol=1e-7)  # -1: the backbone learns to hide it


def test_a_negative_factor_teaches_the_head_to_read_and_the_backbone_to_confuse_it():
    from cxrray.training.short import attribute_loss

    torch.manual_seed(0)
    a = torch.tensor([0, 1, 0, 1, -1, 1])
    features = (torch.randn(6, 4) + 2.0 * a[:, None].clamp(min=0)).requires_grad_(True)  # readable attribute
    head = torch.nn.Linear(4, 2)
    attribute_loss(head, features, a, -1.0).backward()
    reading = torch.nn.functional.cross_entropy(head(features.detach()), a, ignore_index=-1)
    want = torch.autograd.grad(reading, list(head.parameters()))
    assert all(torch.allclose(p.grad, w, atol=1e-6)  # head: reads only
               for p, w in zip(head.parameters(), want, strict=True))
    with torch.no_grad():  # a small step of the features along their gradient makes the head's output flatter
        before = torch.softmax(head(features), 1)[a >= 0]
        after = torch.softmax(head(features - 0.1 * features.grad), 1)[a >= 0]
    entropy = lambda p: -(p * p.log()).sum(1).mean()  # noqa: E731
    assert entropy(after) > entropy(before)
    assert features.grad[4].abs().sum() == 0  # an image of unknown sex asks nothing of the backbone
    assert attribute_loss(head, features, torch.full((6,), -1), -1.0).item() == 0.0


def test_attribute_classes_and_unknown_values():
    batch = {"row": np.arange(5), "sex": np.array(["F", "M", "", "F", "X"]),
             "age": np.array(["39", "40", "74", "75", "n/a"])}
    assert attribute_targets("sex", batch).tolist() == [1, 0, -1, 1, -1]
    assert attribute_targets("age_band", batch).tolist() == [0, 1, 2, 3, -1]


def test_a_family_name_is_the_factor_sweep_and_each_factor_is_a_method():
    names = expand_methods(["standard", "short_sex"])
    assert names == ("standard", "short_sex_-1", "short_sex_-0.5", "short_sex_0", "short_sex_0.5", "short_sex_1")
    assert METHODS.get("short_age_band_0.25").factor == 0.25 and METHODS.get("short_sex_-1").attribute == "sex"
    with pytest.raises(KeyError, match="short_<attribute>_<factor>"):
        METHODS.get("short_sex_2")  # outside [-1, 1]


def _sex_columns(n: int = 60, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Images whose brightness tells the class, a corner square the sex (F), so both can be learnt."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    female = rng.random(n) < 0.5
    image = rng.normal(0.3, 0.05, (n, size, size)).astype(np.float32) + 0.3 * y[:, None, None]
    image[female, :6, :6] = 1.0
    return {"image": image, "mask": np.ones((n, size, size), np.uint8), "label": np.where(y, "CVP", "NOR"),
            "row": np.arange(1, n + 1), "patient_id": np.array([f"p{i}" for i in range(n)]),
            "source": np.array(["a"] * n), "severity": np.array(["none"] * n),
            "sex": np.where(female, "F", "M"), "age": rng.integers(20, 90, n).astype(str)}


def test_a_short_trial_records_its_encoding_and_resumes_with_its_attribute_head(tmp_path):
    from cxrray.records import TrialRecord
    from cxrray.training.worker import run_trial

    cols = _sex_columns()
    idx = np.arange(len(cols["row"]))
    parts = {"train": idx % 5 < 3, "val": idx % 5 == 3, "test": idx % 5 == 4}
    datasets = {s: _Dataset({k: v[m] for k, v in cols.items()}) for s, m in parts.items()}
    spec = TrialSpec(study="hide_seek", data_id="d", representation="original", backbone="basecnn", image_size=32,
                     recipe=TrainRecipe(epochs=3, batch_size=12, lr=3e-3), method="short_sex_1")
    ctx = TrialContext(spec=spec, run_dir=str(tmp_path), data=DataRef("d", "", (1.0, 1.0)), wandb="disabled",
                       project="t", checkpoint_every_s=0.0)
    crashed = _Session(datasets, stop_after=1)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_trial(ctx, crashed)
    assert "aux" in crashed.state and set(crashed.state["aux"]) == {"weight", "bias"}
    retry = _Session(datasets, state=crashed.state)
    run_trial(ctx, retry)
    assert [r["epoch"] for r in retry.reports] == [2]
    assert all(r["train_attribute_loss"] > 0 for r in crashed.reports + retry.reports)
    record = TrialRecord.read(TrialDir(tmp_path / "trials" / spec.trial_id))
    short = record.short  # a typed, validated record, not a dict read by key
    assert (short.attribute, short.factor) == ("sex", 1.0) and "short" not in record.method
    assert 0.0 <= short.encoding_auroc <= 1.0 and record.metrics["test_encoding_auroc"] == short.encoding_auroc


def test_the_gap_is_the_sick_patients_mean_score_women_minus_men():
    rows = []
    for i in range(24):
        sex, y = ("F", "M")[i % 2], int(i % 4 < 2)
        for image in range(2):  # two images per patient: the patient's mean counts once
            score = (0.3 if sex == "F" else 0.8) + 0.1 * image if y else 0.1
            rows.append({"patient_id": f"p{i}", "sex": sex, "target": y, "prob_CVP": score, "split": "test"})
    gap, women, men = balance_gap(pl.DataFrame(rows), "CVP", 1, "sex")
    assert (women, men) == (6, 6) and gap == pytest.approx(0.35 - 0.85)
    assert np.isnan(balance_gap(pl.DataFrame(rows[:8]), "CVP", 1, "sex")[0])  # too few sick patients


def test_slope_verdicts_read_one_interval():
    x = np.linspace(0.5, 1.0, 6)
    moves = slope_verdict(x, -0.8 * x + np.array([0.01, -0.01, 0.0, 0.01, -0.01, 0.0]), 0.95)
    assert moves["verdict"] == "gap moves with the encoding" and moves["slope_hi"] < 0
    flat = slope_verdict(x, 0.002 * np.sin(np.arange(6)), 0.95)
    assert flat["verdict"] == "no dependence" and -SLOPE_MARGIN < flat["slope_lo"] < flat["slope_hi"] < SLOPE_MARGIN
    small = slope_verdict(x, 0.03 * x + 0.001 * np.sin(np.arange(6)), 0.95)  # nonzero, known to be negligible
    assert small["slope_lo"] > 0 and small["verdict"] == "no dependence"
    noisy = slope_verdict(x, np.array([0.3, -0.2, 0.25, -0.3, 0.1, 0.0]), 0.95)
    assert noisy["verdict"] == "inconclusive" and noisy["slope_lo"] < 0 < noisy["slope_hi"]
    assert slope_verdict(x[:MIN_MODELS - 1], x[:MIN_MODELS - 1], 0.95)["verdict"] == "too few models"


@pytest.mark.parametrize("models", [5, 10, 25])
def test_no_dependence_planted_gives_few_false_claims_and_the_interval_covers(models):
    """Gaps independent of the encoding (true slope 0), with the spread a real gap has: a false "gap moves" in at
    most 5 % of 2,000 simulated sweeps; a true slope at the margin falsely called "no dependence" in at most 5 %;
    with a true slope the interval covers it in 93-97 %."""
    rng = np.random.default_rng(models)
    false, false_flat, covered = 0, 0, 0
    for _ in range(2000):
        x = rng.uniform(0.5, 1.0, models)
        null = slope_verdict(x, rng.normal(-0.1, 0.05, models), 0.95)
        false += null["verdict"] == "gap moves with the encoding"
        edge = slope_verdict(x, SLOPE_MARGIN * x + rng.normal(0, 0.05, models), 0.95)
        false_flat += edge["verdict"] == "no dependence"
        true = slope_verdict(x, 0.4 * x + rng.normal(0, 0.05, models), 0.95)
        covered += true["slope_lo"] <= 0.4 <= true["slope_hi"]
    assert false / 2000 <= 0.05 + 0.01 and false_flat / 2000 <= 0.05 + 0.01, (false, false_flat)
    assert 0.93 <= covered / 2000 <= 0.97, covered


@pytest.mark.parametrize("models", [5, 10, 25])
def test_a_true_slope_at_the_stated_detectable_size_is_found_in_80_percent(models):
    """The detectable slope an inconclusive cell reports, computed from the design's true standard error: 2,000
    simulated sweeps with that true slope call "gap moves" in 76-84 % (80 % power, +/- 4 simulation SE)."""
    from cxrray.analysis.shortcut_testing import detectable_slope

    rng = np.random.default_rng(100 + models)
    x = np.linspace(0.5, 1.0, models)
    b = detectable_slope(0.05 / np.sqrt(((x - x.mean()) ** 2).sum()), models, 0.95)
    found = sum(slope_verdict(x, -b * x + rng.normal(0, 0.05, models), 0.95)["verdict"]
                == "gap moves with the encoding" for _ in range(2000))
    assert 0.76 <= found / 2000 <= 0.84, (b, found)
    assert detectable_slope(0.1, 10, 0.95) == pytest.approx(2 * detectable_slope(0.05, 10, 0.95))


def test_cells_share_a_bonferroni_level():
    x = np.linspace(0.5, 1.0, 5)
    points = pl.DataFrame({"representation": ["original"] * 10, "backbone": ["a"] * 5 + ["b"] * 5,
                           "attribute": "sex", "encoding_auroc": np.concatenate([x, x]),
                           "gap": np.concatenate([-x, 0 * x + 0.01 * np.cos(np.arange(5))])})
    table = cell_table(points).sort("backbone")
    assert table["level"].to_list() == [1 - 0.05 / 2] * 2
    assert table["verdict"].to_list() == ["gap moves with the encoding", "no dependence"]


def test_a_cell_whose_groups_are_too_small_is_a_row_saying_why():
    """ShorT trials trained but the test split has 2 sick women: no gap, and the cell says so instead of
    vanishing from the table, the report and the console (issue 42)."""
    x = np.linspace(0.5, 1.0, 5)
    points = pl.DataFrame({"representation": ["original"] * 10, "backbone": ["a"] * 5 + ["b"] * 5,
                           "attribute": "sex", "encoding_auroc": np.concatenate([x, x]),
                           "gap": np.concatenate([-x, np.full(5, np.nan)]), "groups": "F - M",
                           "patients_group": [9] * 5 + [2, 3, 2, 2, 2], "patients_reference": [9] * 5 + [8] * 5})
    table = cell_table(points).sort("backbone")
    assert table["verdict"].to_list() == ["gap moves with the encoding", "groups too small"]
    assert table["level"][0] == 0.95  # the cell without a slope is not a test: Bonferroni over one
    assert table["why"][1] == "fewer than 5 positive test patients in a group (F - M: 2 and 8)"


def test_a_slope_resting_on_one_point_is_no_claim():
    """Four models encode the attribute perfectly and one a little less: the factors did not move the encoding,
    so however steep the line through them, no claim is made."""
    x, y = np.array([1.0, 1.0, 1.0, 1.0, 0.89]), np.array([-0.36, -0.29, -0.29, -0.34, -0.47])
    assert slope_verdict(x, y, 0.95)["verdict"] == "encoding did not vary"


@pytest.mark.slow
@pytest.mark.parametrize("planted", [True, False])
def test_on_the_phantom_a_planted_sex_shortcut_moves_the_gap_with_the_encoding_and_none_does_not(tmp_path,
                                                                                                    planted):
    """Known answer: sex readable outside the lungs (``sex_signature``) in both arms; planted, COVID-19 rarer in
    women (``female_rarity``) and fainter in them (``female_gap``), so a model that encodes sex can lower the
    scores of sick women. ``--methods short_sex``: models of resnet18 at 64 px, 12 epochs. Planted, 4 seeds (20
    models, about 14 minutes): ten models find it in only 5 of the 10 pairs of seeds 0-4, fifteen in 9 of 10
    triples, twenty in all 5 quadruples (the same models, trained once: a trial is a function of its spec). None
    planted, 2 seeds (10 models, about 7 minutes): "no dependence" needs the interval inside the margin, harder
    with fewer models."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cxrray.data.phantom import write_phantom

    seeds = ["0", "1", "2", "3"] if planted else ["0", "1"]
    manifest = write_phantom(tmp_path / "data", n_patients=800, images_per_patient=(1, 1), seed=1, size=64,
                             confound=0.0, sex_signature=0.2, label_probs=(0.2, 0.5, 0.15, 0.15),
                             female_rarity=0.6 * planted, female_gap=0.5 * planted)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "sweeps" / "hide_seek.py"), "--manifest", str(manifest),
                           "--out", str(tmp_path / "run"), "--representations", "original", "--backbones",
                           "resnet18", "--methods", "short_sex", "--seeds", *seeds, "--epochs", "12",
                           "--image-size", "64", "--wandb", "disabled", "--analysis", "statistics"],
                          capture_output=True, text=True, cwd=root, timeout=2400,
                          env=os.environ | {"RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cell = pl.read_csv(tmp_path / "run" / "analysis" / "shortcut_testing.csv").row(0, named=True)
    assert cell["models"] == 5 * len(seeds)
    assert cell["encoding_max"] - cell["encoding_min"] > 0.15  # the factors moved it
    if planted:
        assert cell["verdict"] == "gap moves with the encoding" and cell["slope_hi"] < 0, cell
    else:
        assert cell["verdict"] == "no dependence", cell


def test_shorts_encoding_is_a_validated_record_and_an_older_file_still_reads():
    """``TrialRecord.short`` replaces ``method["short"]`` read by key (issue 38): a file of an older build keeps
    it under ``method`` and reads into the record; a damaged value is one line naming what is wrong."""
    from cxrray.config import TrialSpec
    from cxrray.records import ShortEncoding, TrialRecord
    from cxrray.registry import UserError

    spec = TrialSpec(study="s", data_id="d", representation="original", backbone="basecnn", method="short_sex_1")
    base = {"spec": spec.to_dict(), "init": "random", "best_epoch": 0, "best_val_auroc": 0.9}
    short = {"attribute": "sex", "factor": 1, "encoding_auroc": 0.7}
    older = TrialRecord.from_dict(base | {"method": {"short": short}})
    assert older.short == ShortEncoding("sex", 1.0, 0.7) and older.method == {}
    again = TrialRecord.from_dict(older.to_dict())
    assert again == older and again.to_dict()["short"] == {"attribute": "sex", "factor": 1.0, "encoding_auroc": 0.7}
    with pytest.raises(UserError, match="out of range"):
        TrialRecord.from_dict(base | {"short": {"attribute": "sex", "factor": 3.0, "encoding_auroc": 0.7}})
    with pytest.raises(UserError, match="is not readable"):
        TrialRecord.from_dict(base | {"short": {"attribute": "sex", "factor": "high"}})
