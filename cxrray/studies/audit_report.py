"""The audit's figure and report: the answer first (the headline in its verdict's colour), then each
representation's AUROC with its interval, drawn and tabled, with what it says and does not say."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from jinja2 import Template

from cxrray.config import RunLayout
from cxrray.plots.figures import pyplot
from cxrray.plots.palette import VERDICTS
from cxrray.verdicts.audit import OUT_OF_DISTRIBUTION, AuditRow
from cxrray.verdicts.verdict import Headline

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
{% for r in rows %}<tr><td>{{ r.representation }}</td><td>{{ "%.3f"|format(r.auroc) }} [{{ "%.3f"|format(r.ci_lo) }},
{{ "%.3f"|format(r.ci_hi) }}]</td><td>{{ r.patients_pos }} / {{ r.patients_neg }}</td><td>{{ r.verdict }}</td>
<td>{{ r.says }}</td></tr>{% endfor %}</table>
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


def write_report(layout: RunLayout, spec: Any, rows: list[AuditRow], headline: Headline, patients: int) -> Path:
    """``analysis/audit.png`` and ``report.html`` of the run folder."""
    figure = layout.analysis_file("audit.png")
    plot_audit(rows, figure)
    head, _, rest = headline.text.partition(":")
    page = PAGE.render(figure=figure.relative_to(layout.root).as_posix(), model=Path(spec.path).name, head=head,
                       rest=":" + rest, strong=headline.tone.colour,
                       light=headline.tone.background, patients=patients, rows=rows,
                       level=f"{rows[0].level:.4g}" if rows else "-", caveat=OUT_OF_DISTRIBUTION[0].upper()
                       + OUT_OF_DISTRIBUTION[1:], spec=html.unescape(str(spec)))
    Path(layout.report).write_text(page)
    return Path(layout.report)
