"""``RUN_DIR/report.html``: one self-contained page (tables inline, figures as data URIs).

Built only from what the analysis wrote under ``analysis/`` and the run's stored
predictions and results, so it reruns anywhere without retraining or network.
"""

from __future__ import annotations

import base64
import html
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl

PACKAGES = ("cxrray", "torch", "torchvision", "timm", "ray", "kornia", "pydicom", "scikit-learn", "grad-cam",
            "wandb", "polars")
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}
img{max-width:100%;border:1px solid #eee}code{background:#f6f6f6}pre{white-space:pre-wrap}
.scroll{overflow-x:auto}"""
# After load: count tables and images that failed to decode, so a headless browser can check the page.
CHECK = """<script>window.addEventListener('load',()=>{const b=document.body;
b.dataset.tables=document.querySelectorAll('table').length;
b.dataset.images=document.images.length;
b.dataset.brokenImages=[...document.images].filter(i=>!(i.complete&&i.naturalWidth>0)).length;});</script>"""


def _e(x: object) -> str:
    return html.escape("" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x))


def _table(df: pl.DataFrame, colour: str | None = None, max_rows: int = 200) -> str:
    """A DataFrame as an HTML table; ``colour``: a [0, 1] column shading its row cells from red to green."""
    if df.is_empty():
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for r in df.head(max_rows).iter_rows(named=True):
        style = ""
        if colour and isinstance(r.get(colour), float) and r[colour] == r[colour]:
            v = min(max((r[colour] - 0.5) * 2, 0.0), 1.0)  # 0.5 (chance) red -> 1.0 green
            style = f' style="background:rgb({int(255 - 120 * v)},{int(150 + 100 * v)},150)"'
        body.append(f"<tr{style}>" + "".join(f"<td>{_e(v)}</td>" for v in r.values()) + "</tr>")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(body)}</table></div>"


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}' \
           f"</figcaption></figure>"


def _csv(out: Path, name: str) -> pl.DataFrame:
    return pl.read_csv(out / name) if (out / name).exists() else pl.DataFrame()


def _roc_figure(predictions: pl.DataFrame, aurocs: pl.DataFrame, path: Path) -> None:
    """ROC curves (COVID-19 vs rest) of every trial in the table, one panel per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    test = predictions.filter(pl.col("split") == "test")
    backbones = sorted(aurocs["backbone"].unique().to_list())
    fig, axes = plt.subplots(1, len(backbones), figsize=(4.2 * len(backbones), 4), squeeze=False)
    for ax, bb in zip(axes[0], backbones):
        for k, r in enumerate(aurocs.filter(pl.col("backbone") == bb).iter_rows(named=True)):
            part = test.filter(pl.col("trial_id") == r["trial_id"])
            fpr, tpr, _ = roc_curve((part["label"] == "CVP").to_numpy(), part["prob_CVP"].to_numpy())
            name = r.get("representation") if r.get("pretraining") in (None, "none") else r.get("pretraining")
            ax.plot(fpr, tpr, color=f"C{k % 10}", lw=1.4, label=f"{name} s{r.get('seed', 0)} ({r['auroc']:.2f})")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(title=bb, xlabel="1 - specificity", ylabel="sensitivity")
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pvalue_matrices(pairs: pl.DataFrame) -> str:
    """Per family: the pairwise p-value matrix, raw (upper triangle) and Holm-adjusted (lower)."""
    parts = []
    for (family,), g in pairs.group_by("family", maintain_order=True):
        names = sorted(set(g["a"]) | set(g["b"]))
        idx = {n: i for i, n in enumerate(names)}
        m = np.full((len(names), len(names)), np.nan)
        for r in g.iter_rows(named=True):
            i, j = sorted((idx[r["a"]], idx[r["b"]]))
            m[i, j], m[j, i] = r["p"], r["p_holm"]
        df = pl.DataFrame({"cell": names} | {n: m[:, k] for k, n in enumerate(names)})
        parts.append(f"<h3>{_e(family)}: raw p above the diagonal, Holm-adjusted below ({g.height} tests)</h3>"
                     + _table(df))
    return "".join(parts)


def _provenance(run_dir: Path, results: pl.DataFrame) -> str:
    versions = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = "-"
    data = results.select([c for c in ("data_id", "study", "task", "design", "fold") if c in results.columns]).unique()
    specs = results.select([c for c in results.columns if c in ("trial_id", "run_name", "status", "init")
                            or c.startswith("recipe.")])
    return (f"<p>Run directory <code>{_e(run_dir)}</code>.</p>" + _table(pl.DataFrame(
        {"package": list(versions), "version": list(versions.values())})) +
        "<h3>Datasets (data_id = hash of the manifest rows and their split)</h3>" + _table(data) +
        "<h3>Trials (full specs in results.parquet and trials/&lt;id&gt;/trial.json)</h3>" + _table(specs))


def write_report(run_dir: str | Path, summary_text: str) -> Path:
    """Write ``run_dir/report.html`` from the analysis outputs; returns its path."""
    run_dir = Path(run_dir)
    out = run_dir / "analysis"
    predictions = pl.read_parquet(run_dir / "predictions.parquet")
    results = pl.read_parquet(run_dir / "results.parquet")
    aurocs = _csv(out, "trial_aurocs.csv")
    if aurocs.height and "prob_CVP" in predictions.columns:
        _roc_figure(predictions, aurocs.drop_nans("auroc"), out / "roc_curves.png")
    pairs = _csv(out, "delong_pairs.csv")
    shortcut = _csv(out, "shortcut_findings.csv")
    sections = [
        ("Test AUROC per cell (95 % DeLong CI; rows shaded from chance, red, to 1.0, green)",
         _table(aurocs, colour="auroc") + _img(out / "auroc_forest.png", "AUROC with 95 % CI per cell")),
        ("ROC curves", _img(out / "roc_curves.png", "ROC curves, COVID-19 vs rest, per trial")),
        ("Findings in words", "<pre>" + html.escape(summary_text) + "</pre>"),
        ("Shortcut findings", _table(shortcut.with_columns(pl.col("shortcut").cast(pl.Utf8)) if shortcut.height
                                     else shortcut)),
        ("DeLong p-values", _pvalue_matrices(pairs) if pairs.height else "<p><em>fewer than two trials</em></p>"),
        ("Per-class metrics (mean over seeds/folds)", _table(_csv(out, "cell_metrics.csv"))),
        ("Accuracy per severity", _table(_csv(out, "severity_accuracy.csv"))),
        ("Source probe", _table(_csv(out, "source_probe.csv"))),
        ("Dataset-design bias", _table(_csv(out, "design_drops.csv"))),
        ("Saliency inside the lungs", _table(_csv(out, "saliency_in_lungs.csv")) +
         _img(out / "saliency_in_lungs.png", "Grad-CAM mass inside the lung mask per trial") +
         _img(out / "gradcam_grid.png", "Grad-CAM examples per representation and backbone")),
        ("Provenance", _provenance(run_dir, results)),
    ]
    study = ", ".join(sorted(set(results["study"]))) if "study" in results.columns else ""
    body = "".join(f"<h2>{html.escape(t)}</h2>{c}" for t, c in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>cxrray report: {html.escape(study)}</title>"
            f"<style>{STYLE}</style></head><body><h1>cxrray report: {html.escape(study)}</h1>{body}"
            f"<script type='application/json' id='cxrray-meta'>{json.dumps({'trials': results.height})}</script>"
            f"{CHECK}</body></html>")
    path = run_dir / "report.html"
    path.write_text(page)
    return path
