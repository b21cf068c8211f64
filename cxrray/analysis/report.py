"""``RUN_DIR/report.html``: one self-contained page (tables inline, figures as data URIs).

Built only from the artifacts of the analysis steps (``cxrray.analysis.steps``) and the run's
stored results, so it reruns anywhere without retraining or network. Each step's report sections
name its tables and figures; this module only renders them.
"""

from __future__ import annotations

import base64
import html
import json
import platform
from importlib import metadata
from pathlib import Path

import polars as pl

from cxrray.analysis.steps import Artifacts, LoadedRun, Section

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


def _section(sec: Section, art: Artifacts, run: LoadedRun) -> str:
    parts = [_table(art.tables[t], colour=sec.colour) if t in art.tables else "<p><em>none</em></p>"
             for t in sec.tables]
    parts += [f"<h3>{_e(heading)}</h3>" + _table(frame) for heading, frame in sec.extra]
    parts += [_img(run.figure(f), art.figures[f]) for f in sec.figures if f in art.figures]
    if sec.note:
        parts.append(f"<p><em>{_e(sec.note)}</em></p>")
    return f"<h2>{html.escape(sec.title)}</h2>" + "".join(parts)


def write_report(run: LoadedRun, summary_text: str, artifacts: list[Artifacts]) -> Path:
    """Write ``report.html``: the findings in words, every step's sections in step order, provenance."""
    results = run.results
    body = "<h2>Findings in words</h2><pre>" + html.escape(summary_text) + "</pre>"
    body += "".join(_section(sec, art, run) for art in artifacts for sec in art.sections)
    body += "<h2>Provenance</h2>" + _provenance(run.layout.root, results)
    study = ", ".join(sorted(set(results["study"]))) if "study" in results.columns else ""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>cxrray report: {html.escape(study)}</title>"
            f"<style>{STYLE}</style></head><body><h1>cxrray report: {html.escape(study)}</h1>{body}"
            f"<script type='application/json' id='cxrray-meta'>{json.dumps({'trials': results.height})}</script>"
            f"{CHECK}</body></html>")
    run.layout.report.write_text(page)
    return run.layout.report
