"""Label tasks of Hasan et al.: which manifest labels form which classes.

CL2: NCV (NOR, OVP, OBP) vs CVP; CL3: NOR, NCP (OVP, OBP), CVP;
CL4: NOR, OBP, OVP, CVP. The last class of a binary task is the positive one.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrray.registry import Registry


@dataclass(frozen=True)
class Task:
    """Maps manifest label codes onto class indices."""

    name: str
    classes: tuple[str, ...]
    members: dict[str, tuple[str, ...]]  # class -> manifest labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2

    def class_index(self, label: str) -> int:
        """Index of the class holding manifest label ``label``."""
        for i, c in enumerate(self.classes):
            if label in self.members[c]:
                return i
        raise ValueError(f"label {label!r} is not part of task {self.name}")


TASKS: Registry[Task] = Registry("task")


def _add(task: Task) -> None:
    TASKS.register(task.name)(task)


_add(Task("CL2", ("NCV", "CVP"), {"NCV": ("NOR", "OVP", "OBP"), "CVP": ("CVP",)}))
_add(Task("CL3", ("NOR", "NCP", "CVP"), {"NOR": ("NOR",), "NCP": ("OVP", "OBP"), "CVP": ("CVP",)}))
_add(Task("CL4", ("NOR", "OBP", "OVP", "CVP"),
          {"NOR": ("NOR",), "OBP": ("OBP",), "OVP": ("OVP",), "CVP": ("CVP",)}))
