"""Known-answer checks: does the protocol find a shortcut exactly where one was planted?

The phantom's ``confound`` is the probability that a class comes from its own
hospital, whose signature lies only outside the lungs; disease lies only inside
them. So the answers are known:

- confound 1: models that never see the lungs still separate the classes
  (shortcut flagged), and a model on the whole image puts less of its Grad-CAM
  mass inside the lungs than the same model trained without the confound;
- confound 0: ``lungs_removed`` and ``lungs_boxed_out`` are at chance (95 % CI
  covers 0.5, no shortcut flagged) while ``lungs_isolated`` keeps the signal;
- the shortcut signal (mean AUROC of the lung-hiding representations) grows
  with the confound (dose-response).

Each check reads only the analysis tables of finished runs, so it reruns without training.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cxrray.config import RunLayout
from cxrray.representations import lung_hiding
from cxrray.scalars import num
from cxrray.verdicts.verdict import VERDICTS

HIDDEN = lung_hiding()  # lungs_removed, lungs_boxed_out: their registry entries say they hide the lungs


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    required: bool = True  # False: reported, but not a known answer the run must meet


def _tables(run_dir: Path) -> dict[str, pl.DataFrame]:
    layout = RunLayout(Path(run_dir))
    out = {"auroc": pl.read_csv(layout.analysis_file("trial_aurocs.csv")),
           "shortcut": pl.read_csv(layout.analysis_file("shortcut_findings.csv"))}
    sal = layout.analysis_file("saliency_in_lungs.csv")
    out["saliency"] = pl.read_csv(sal) if sal.exists() else pl.DataFrame()
    return out


def _mean_auroc(t: pl.DataFrame, reps: tuple[str, ...]) -> float:
    return num(t.filter(pl.col("representation").is_in(list(reps)))["auroc"].mean())


def _lung_share(t: pl.DataFrame) -> float:
    """Mean Grad-CAM share inside the lungs of the whole-image (``original``) models, predicted class."""
    if t.is_empty():
        return float("nan")
    return num(t.filter(pl.col("representation") == "original")["lung_share_pred"].drop_nans().mean())


def known_answer_checks(runs: Mapping[float, Path], dose_min: float = 0.2) -> tuple[list[Check], pl.DataFrame]:
    """Checks over finished runs keyed by confound (must include 0.0 and 1.0) and a summary table."""
    tabs = {c: _tables(d) for c, d in sorted(runs.items())}
    if 0.0 not in tabs or 1.0 not in tabs:
        raise ValueError(f"known-answer checks need confound 0 and 1 runs, got {sorted(tabs)}")
    rows = []
    for c, t in tabs.items():
        row: dict[str, object] = {"confound": c}
        for rep in ("original", "lungs_isolated", *HIDDEN):
            r = t["auroc"].filter(pl.col("representation") == rep)
            row[rep] = "" if r.is_empty() else "; ".join(
                f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in r.select("auroc", "ci_lo", "ci_hi").iter_rows())
        row["hidden_mean_auroc"] = _mean_auroc(t["auroc"], HIDDEN)
        row["shortcut_flagged"] = int(t["shortcut"]["shortcut"].sum())
        row["of_trials"] = t["shortcut"].height
        row["saliency_in_lungs_original"] = _lung_share(t["saliency"])
        rows.append(row)
    table = pl.DataFrame(rows)
    on, off = tabs[1.0], tabs[0.0]
    hidden_off = off["auroc"].filter(pl.col("representation").is_in(list(HIDDEN)))
    iso_off = off["auroc"].filter(pl.col("representation") == "lungs_isolated")
    flagged_on = on["shortcut"].filter(pl.col("shortcut"))
    doses = table["hidden_mean_auroc"].to_list()
    share_on, share_off = _lung_share(on["saliency"]), _lung_share(off["saliency"])
    checks = [
        Check("confound 1: shortcut flagged for every lung-hiding trial",
              flagged_on.height == on["shortcut"].height > 0,
              f"{flagged_on.height}/{on['shortcut'].height} flagged"),
        # Reported, not required: Grad-CAM of ResNet-18 at 64 px (layer2, 8x8) does not localise the phantom's
        # planted lung signal (share inside the lungs below the lung area at confound 0), so it is no known answer.
        Check("confound 1: Grad-CAM leaves the lungs (original, share inside lungs below the unconfounded model's)",
              share_on < share_off, f"{share_on:.3f} vs {share_off:.3f} without the confound", required=False),
        Check("confound 0: lungs_removed and lungs_boxed_out at chance (95 % CI covers 0.5)",
              hidden_off.height > 0 and bool(((hidden_off["ci_lo"] <= 0.5) & (hidden_off["ci_hi"] >= 0.5)).all()),
              "; ".join(f"{r} {a:.3f} [{lo:.3f}, {hi:.3f}]" for r, a, lo, hi in
                        hidden_off.select("representation", "auroc", "ci_lo", "ci_hi").iter_rows())),
        Check("confound 0: no shortcut flagged", not off["shortcut"]["shortcut"].any(),
              f"{int(off['shortcut']['shortcut'].sum())} flagged"),
        Check("confound 0: lungs_isolated keeps the signal (95 % CI above 0.5)",
              iso_off.height > 0 and bool((iso_off["ci_lo"] > 0.5).all()),
              "; ".join(f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                        iso_off.select("auroc", "ci_lo", "ci_hi").iter_rows())),
        Check(f"dose-response: lung-hiding AUROC grows with the confound (by >= {dose_min} from 0 to 1)",
              all(b >= a - 0.02 for a, b in itertools.pairwise(doses)) and doses[-1] - doses[0] >= dose_min,
              " -> ".join(f"{c:g}: {d:.3f}" for c, d in zip(table["confound"], doses, strict=True))),
    ]
    return checks, table


def format_checks(checks: list[Check]) -> str:
    """One line per check; a check that is reported but not required reads [info]."""
    return "\n".join(f"[{'PASS' if c.passed else 'FAIL' if c.required else 'info'}] {c.name}: {c.detail}"
                     for c in checks)


def operating_characteristics(runs: Mapping[int, Mapping[float, Path]]) -> pl.DataFrame:
    """How the shortcut verdict behaves where the answer is known, over phantom seeds: per confound, the
    lung-hiding trials tested, how many got each verdict, and the flag rate (``shortcut`` verdicts / trials):
    the false-flag rate at confound 0, the detection rate where the confound is planted; with its spread
    (lowest and highest per-seed rate)."""
    rows = []
    for seed, by_confound in sorted(runs.items()):
        for c, run_dir in sorted(by_confound.items()):
            f = _tables(run_dir)["shortcut"]
            verdicts = f["verdict"].to_list() if "verdict" in f.columns else []
            rows.append({"seed": seed, "confound": c, "tested": len(verdicts)}
                        | {v: verdicts.count(v) for v in VERDICTS})
    per_seed = pl.DataFrame(rows).with_columns((pl.col("shortcut") / pl.col("tested")).alias("rate"))
    return (per_seed.group_by("confound").agg(pl.len().alias("seeds"), pl.col("tested").sum(),
                                               *[pl.col(v).sum() for v in VERDICTS],
                                               pl.col("rate").min().alias("rate_min"),
                                               pl.col("rate").max().alias("rate_max"))
            .with_columns((pl.col("shortcut") / pl.col("tested")).alias("flag_rate")).sort("confound"))
