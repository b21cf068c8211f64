"""The audit's figure and report: the answer first (the headline in its verdict's colour), then each
representation's AUROC with its interval, drawn and tabled, with what it says and does not say."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Template

from cxrray.config import RunLayout
from cxrray.plots.figures import plot_gradcam_grid, pyplot
from cxrray.plots.palette import VERDICTS
from cxrray.verdicts.audit import OUT_OF_DISTRIBUTION, AuditRow
from cxrray.verdicts.verdict import Headline

if TYPE_CHECKING:  # (torch and polars load where the audit runs, not to draw its page)
    import polars as pl

    from cxrray.explain.audit_evidence import AuditSaliency
    from cxrray.models.external import ModelSpec

PAGE = Template("""<!doctype html><html><head><meta charset="utf-8"><title>cxrray audit</title>
<style>body{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
.answer{padding:14px 18px;border-left:8px solid {{ strong }};background:{{ light }};font-size:1.15em}
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:5px 9px;text-align:left}
.note{color:#555}</style></head><body>
<h1>Audit of {{ model }}</h1>
<p class="answer"><b>{{ head }}</b>{{ rest }}</p>
<p class="note">{{ patients }} test patients; intervals at the Bonferroni level {{ level }} over the lung-hiding
representations, patients as the unit. {{ caveat }}.</p>
<img src="{{ figure }}" alt="AUROC per representation with its interval" width="720">
<table><tr><th>representation</th><th>AUROC [interval]</th><th>patients +/-</th><th>verdict</th>
<th>what it says</th></tr>
{% for r in rows %}<tr><td>{{ r.representation }}</td><td>{% if r.auroc == r.auroc %}{{ "%.3f"|format(r.auroc) }}
[{{ "%.3f"|format(r.ci_lo) }}, {{ "%.3f"|format(r.ci_hi) }}]{% else %}&mdash;{% endif %}</td>
<td>{{ r.patients_pos }} / {{ r.patients_neg }}</td><td>{{ r.verdict }}</td>
<td>{{ r.says }}</td></tr>{% endfor %}</table>
<h2>Where the model looks</h2>
<p>{{ saliency }}.{% if no_verdict %} The audit gives no verdict for this model on this test set: the maps
show where it looks, not evidence about the lungs.{% endif %}</p>
{% if saliency_figure %}<img src="{{ saliency_figure }}" alt="Grad-CAM of the positive output on test images"
width="900"><p class="note">Grad-CAM shows where the gradient-weighted features of the positive output lie, not
what the decision needs; an image's share is compared with the lungs' share of it.</p>{% endif %}
{% if sources %}<h2>What the acquisition gives away</h2>
<table><tr><th>evidence</th><th>value [interval]</th><th>chance</th><th>what it says</th></tr>
{% for r in sources %}<tr><td>{{ r.evidence }}</td><td>{{ "%.3f"|format(r.value) }} [{{ "%.3f"|format(r.lo) }},
{{ "%.3f"|format(r.hi) }}]</td><td>{{ "%.2f"|format(r.chance) }}</td><td>{{ r.says }}</td></tr>{% endfor %}
</table>{% endif %}
<p class="note">Model spec: {{ spec }}</p></body></html>""", autoescape=True)


def plot_audit(rows: list[AuditRow], path: Path) -> None:
    """AUROC per representation with its interval, coloured by the representation's verdict (grey: none)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 0.5 + 0.55 * len(rows)))
    for i, r in enumerate(rows):
        colour = VERDICTS[r.verdict][0] if r.verdict in VERDICTS else "#37474f"
        ax.plot([r.ci_lo, r.ci_hi], [i, i], color=colour, lw=3)
        ax.plot([r.auroc], [i], "o", color=colour)
        ax.text(1.02, i, r.verdict.replace("_", " "), color=colour, va="center", fontsize=9)
    ax.axvline(0.5, color="#999", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [r.representation for r in rows])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("test AUROC of the positive class (interval: patients as the unit)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(layout: RunLayout, spec: ModelSpec, rows: list[AuditRow], headline: Headline, patients: int,
                 saliency: AuditSaliency | None = None, sources: pl.DataFrame | None = None) -> Path:
    """``analysis/audit.png`` (and ``audit_saliency.png`` where there are maps) and ``report.html`` of the run
    folder; ``saliency`` an ``explain.audit_evidence.AuditSaliency`` or None, ``sources`` its table or None."""
    figure = layout.analysis_file("audit.png")
    plot_audit(rows, figure)
    saliency_figure = ""
    if saliency is not None and saliency.figure:
        path = layout.analysis_file("audit_saliency.png")
        plot_gradcam_grid({"audited": saliency.figure}, path, per_class=4)
        saliency_figure = path.relative_to(layout.root).as_posix()
    head, _, rest = headline.text.partition(":")
    page = PAGE.render(figure=figure.relative_to(layout.root).as_posix(), model=Path(spec.path).name, head=head,
                       rest=":" + rest, strong=headline.tone.colour,
                       light=headline.tone.background, patients=patients, rows=rows,
                       level=f"{rows[0].level:.4g}" if rows else "-", caveat=OUT_OF_DISTRIBUTION[0].upper()
                       + OUT_OF_DISTRIBUTION[1:], spec=html.unescape(str(spec)),
                       saliency=saliency.says if saliency is not None else "not asked (--saliency 0)",
                       saliency_figure=saliency_figure, no_verdict=headline.head == "NO VERDICT",
                       sources=sources.to_dicts() if sources is not None and sources.height else [])
    Path(layout.report).write_text(page)
    return Path(layout.report)
