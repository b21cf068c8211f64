"""W&B dashboards as code: the workspace a sweep's W&B project opens on, defined from the run.

Each analysis with W&B on writes ``<out>/wandb_workspace.json``: a ``Dashboard`` record (sections of panels, each
naming the logged keys it shows). ``--wandb online`` also creates or updates the workspace with
``wandb-workspaces``; offline, ``python -m cxrray.analysis workspace DIR`` pushes the written definition later
(after ``wandb sync``). The panels:

- **Training**: validation AUROC and training loss by epoch, the runs grouped by representation and backbone
  (one line per cell, replicates averaged with their range), from every trial's history (``val_auroc``,
  ``train_loss``, ``epoch``);
- **Verdicts**: the summary run's verdict tables (``analysis/cell_verdicts``, ``analysis/shortcut_findings``,
  the mask-dilation table when there is one) and the forest plot (``figures/auroc_forest``);
- **Bias**: the subgroup, underdiagnosis and source-ceiling tables and their figures, where the run made them.

A panel names only keys the run logged: the definition is built from the analysis' own artifacts, and the tests
read the offline run files back to check every key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

PanelKind = Literal["line", "table", "media"]
GROUP_BY = ("representation", "backbone")  # the runset's grouping: one line per protocol cell
VERDICT_TABLES = ("cell_verdicts", "shortcut_findings", "dilation")
BIAS_TABLES = ("subgroups", "underdiagnosis", "source_ceiling", "calibration")
VERDICT_FIGURES = ("auroc_forest", "dilation")
BIAS_FIGURES = ("subgroups", "reliability")


@dataclass(frozen=True)
class Panel:
    """One panel: a line plot of history keys against ``x``, a logged table, or logged images."""

    kind: PanelKind
    title: str
    keys: tuple[str, ...]  # line: y metrics; table: one table key; media: image keys
    x: str = "epoch"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "keys": list(self.keys), "x": self.x}


@dataclass(frozen=True)
class PanelSection:
    name: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    """A W&B workspace for one study's runs, as data (``to_dict`` is ``wandb_workspace.json``)."""

    project: str
    name: str
    sections: tuple[PanelSection, ...]
    group_by: tuple[str, ...] = GROUP_BY
    entity: str = ""  # empty: W&B's default entity of the API key

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "name": self.name, "entity": self.entity, "group_by": list(self.group_by),
                "sections": [{"name": s.name, "panels": [p.to_dict() for p in s.panels]} for s in self.sections]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Dashboard:
        sections = tuple(PanelSection(s["name"], tuple(Panel(p["kind"], p["title"], tuple(p["keys"]), p["x"])
                                                       for p in s["panels"])) for s in d["sections"])
        return cls(d["project"], d["name"], sections, tuple(d["group_by"]), d.get("entity", ""))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> Dashboard:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def keys(self, kind: PanelKind) -> set[str]:
        return {k for s in self.sections for p in s.panels if p.kind == kind for k in p.keys}

    def workspace(self, entity: str | None = None) -> Any:
        """The ``wandb_workspaces`` Workspace of this definition (validated as it is built; nothing is sent)."""
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws

        def panel(p: Panel) -> Any:
            if p.kind == "line":
                return wr.LinePlot(title=p.title, x=p.x, y=list(p.keys))
            if p.kind == "table":
                return wr.WeavePanelSummaryTable(table_name=p.keys[0])
            return wr.MediaBrowser(title=p.title, media_keys=list(p.keys))

        return ws.Workspace(
            entity=entity or self.entity or _default_entity(), project=self.project, name=self.name,
            sections=[ws.Section(name=s.name, panels=[panel(p) for p in s.panels], is_open=True)
                      for s in self.sections],
            runset_settings=ws.RunsetSettings(groupby=[ws.Config(k) for k in self.group_by]))

    def push(self, entity: str | None = None) -> str:
        """Create or update the workspace on W&B (online); returns its URL."""
        return str(self.workspace(entity).save().url)


def _default_entity() -> str:
    import wandb

    return str(wandb.Api().default_entity or "")


def dashboard_of(study: str, project: str, tables: set[str], figures: set[str], entity: str = "") -> Dashboard:
    """The study's workspace: training curves per cell, then the verdict and bias tables and figures that this
    analysis made (``tables`` / ``figures``: the names its steps returned, logged as ``analysis/<name>`` and
    ``figures/<name>``)."""
    training = PanelSection("Training: validation AUROC by epoch (one line per representation x backbone)", (
        Panel("line", "validation AUROC by epoch", ("val_auroc",)),
        Panel("line", "training loss by epoch", ("train_loss",))))
    verdicts = tuple(Panel("table", name, (f"analysis/{name}",)) for name in VERDICT_TABLES if name in tables) + \
        tuple(Panel("media", name, (f"figures/{name}",)) for name in VERDICT_FIGURES if name in figures)
    bias = tuple(Panel("table", name, (f"analysis/{name}",)) for name in BIAS_TABLES if name in tables) + \
        tuple(Panel("media", name, (f"figures/{name}",)) for name in BIAS_FIGURES if name in figures)
    sections = (training,) + ((PanelSection("Verdicts (the summary run)", verdicts),) if verdicts else ()) + \
        ((PanelSection("Bias and subgroups (the summary run)", bias),) if bias else ())
    return Dashboard(project, f"cxrray {study}", sections, GROUP_BY, entity)
