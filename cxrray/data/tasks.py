"""Label tasks: which manifest labels form which classes (Hasan et al. codes).

Class codes: NOR normal; CVP COVID-19; OVP other viral; OBP other bacterial;
NCP = OVP + OBP (+ PNA); NCV = NOR + NCP (+ OTH). Tasks:

- CL2: NCV vs CVP (binary COVID-19 vs rest); CL3: NOR, NCP, CVP; CL4: NOR, OBP, OVP, CVP.
- PNEU: pneumonia (any cause) vs not (Fricks phase 2).
- CVP_NCP: COVID-19 vs other pneumonia, pneumonia images only (second stage
  of COVID-CXNet's hierarchical classifier).
- CL3H: CL3 as COVID-CXNet's hierarchical classifier: one output for
  pneumonia vs normal, one for COVID-19 vs other pneumonia (pneumonia images
  only); P(NOR), P(NCP), P(CVP) follow from the two (``cxrray.training.heads``).
- NIH14: the 14 ChestX-ray14 findings as a multilabel target read from
  ``finding_<Name>`` columns; an empty cell is unknown and masked out of the loss.

Rows whose label belongs to no class of a task are not part of that task
(``Task.includes``). The last class of a binary task is the positive one.
Severity stays a manifest attribute for per-severity metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cxrray.registry import Registry

NIH14_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)


@dataclass(frozen=True)
class Task:
    """Maps manifest label codes onto class indices (or finding columns onto outputs)."""

    name: str
    classes: tuple[str, ...]
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # class -> manifest labels
    multilabel: bool = False
    hierarchical: bool = False  # two binary stages (normal vs pneumonia, then COVID vs other pneumonia)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2 and not self.multilabel

    @property
    def labels(self) -> tuple[str, ...]:
        """Every manifest label that takes part in the task."""
        return tuple(label for c in self.classes for label in self.members.get(c, ()))

    def includes(self, label: str) -> bool:
        return self.multilabel or label in self.labels

    def class_index(self, label: str) -> int:
        """Index of the class holding manifest label ``label``."""
        for i, c in enumerate(self.classes):
            if label in self.members.get(c, ()):
                return i
        raise ValueError(f"label {label!r} is not part of task {self.name} (its labels: {list(self.labels)})")

    @property
    def finding_columns(self) -> tuple[str, ...]:
        return tuple(f"finding_{c}" for c in self.classes) if self.multilabel else ()

    def multilabel_targets(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) float targets from ``finding_*`` columns: 1, 0, or NaN for unknown."""
        cols = []
        for name in self.finding_columns:
            raw = np.asarray(columns[name]).astype(str)
            cols.append(np.where(np.isin(raw, ("1", "1.0", "True", "true")), 1.0,
                                 np.where(np.isin(raw, ("0", "0.0", "False", "false")), 0.0, np.nan)))
        return np.stack(cols, axis=1)


TASKS: Registry[Task] = Registry("task")


def _add(task: Task) -> None:
    TASKS.register(task.name)(task)


_add(Task("CL2", ("NCV", "CVP"), {"NCV": ("NOR", "OVP", "OBP", "PNA", "OTH"), "CVP": ("CVP",)}))
_add(Task("CL3", ("NOR", "NCP", "CVP"), {"NOR": ("NOR",), "NCP": ("OVP", "OBP", "PNA"), "CVP": ("CVP",)}))
_add(Task("CL4", ("NOR", "OBP", "OVP", "CVP"),
          {"NOR": ("NOR",), "OBP": ("OBP",), "OVP": ("OVP",), "CVP": ("CVP",)}))
_add(Task("PNEU", ("NOPNEU", "PNEU"), {"NOPNEU": ("NOR", "OTH"), "PNEU": ("PNA", "OVP", "OBP", "CVP")}))
_add(Task("CVP_NCP", ("NCP", "CVP"), {"NCP": ("OVP", "OBP", "PNA"), "CVP": ("CVP",)}))
_add(Task("CL3H", ("NOR", "NCP", "CVP"), {"NOR": ("NOR",), "NCP": ("OVP", "OBP", "PNA"), "CVP": ("CVP",)},
          hierarchical=True))
_add(Task("NIH14", NIH14_FINDINGS, multilabel=True))
