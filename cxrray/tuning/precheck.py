"""Checks made before Ray starts, each failing in one line: every numeric option in its range, the image size
for every backbone, registry names, a method's resources, and W&B's credentials when logging online."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cxrray.registry import UserError
from cxrray.wandb_run import KEY_REJECTED, wandb_key, wandb_reachable  # noqa: F401  (tests patch them here)

if TYPE_CHECKING:
    from cxrray.tuning.options import Study

# option -> (lowest, highest, what it is): every numeric option is checked before Ray starts, in one line
NUMBERS: dict[str, tuple[float, float, str]] = {
    "image_size": (16, 4096, "px"), "epochs": (1, 100_000, "epochs"), "batch_size": (1, 1_000_000, "images"),
    "lr": (1e-12, 10.0, "learning rate"), "num_workers": (1, 10_000, "workers"),
    "cpus_per_worker": (0.01, 1024, "CPUs"), "max_concurrent": (1, 100_000, "trials at once"),
    "data_cpus": (0.0, 1024, "CPUs"), "checkpoint_every_s": (0.0, 1e9, "s"), "max_failures": (0, 1000, "retries"),
    "max_trials": (1, 100_000_000, "trials per command"),
    "num_cpus": (1, 100_000, "CPUs"), "phantom_patients": (6, 1_000_000, "patients"),
    "asha_grace": (1, 100_000, "epochs"), "asha_reduction": (1.01, 1000, "reduction"),
    "saliency": (0, 100_000, "images"), "confound": (0.0, 1.0, "share"), "signature": (0.0, 1.0, "strength"),
}


def check_numbers(study: Study) -> None:
    """Every numeric option within its range (``NUMBERS``), before Ray starts: ``--image-size -32`` or
    ``--epochs -1`` is one line naming the option, never a traceback from a Ray task after the ingest."""
    for name, (lo, hi, unit) in NUMBERS.items():
        values = getattr(study, name, None)
        for v in values if isinstance(values, (list, tuple)) else [values]:
            if v is not None and not lo <= v <= hi:
                raise UserError(f"--{name.replace('_', '-')} {v} is out of range: {lo:g} to {hi:g} {unit}")


def check_image_size(size: int, backbones: Sequence[str]) -> None:
    """The image size fits every backbone of the sweep, before Ray starts (``study.check_image_size``)."""
    from cxrray.tuning.study import check_image_size as check

    check(size, backbones)


def wandb_mode(asked: str) -> str:
    """``online`` only with a key that W&B accepts, checked once before any trial: no key or a rejected one is one
    line, exit 2; a server that is down or failing is one line and the sweep logs offline (``wandb sync`` uploads it
    later; every trial used to fail after minutes of retries). ``auto``: online when both hold, else offline."""
    if asked not in ("online", "auto"):
        return asked
    why = "no W&B API key (set WANDB_API_KEY or run `wandb login`)" if not wandb_key() else wandb_reachable()
    if not why:
        return "online"
    if asked == "auto" or not (why.startswith("no W&B API key") or why.startswith(KEY_REJECTED)):
        print(f"[cxrray] --wandb {asked}: {why}; logging offline (upload later with `wandb sync`)", flush=True)
        return "offline"
    raise UserError(f"--wandb online: {why}; use --wandb offline (and `wandb sync` later) or --wandb auto")


def check_names(**names: Sequence[str]) -> None:
    """Every name exists in its registry (``backbone=[...]``, ``task=[...]`` ...), before Ray starts."""
    from cxrray.data.tasks import TASKS
    from cxrray.models import BACKBONES
    from cxrray.representations import REPRESENTATIONS
    from cxrray.training.methods import METHODS
    from cxrray.training.recipes import RECIPES

    registries = {"backbone": BACKBONES, "representation": REPRESENTATIONS, "task": TASKS, "recipe": RECIPES,
                  "method": METHODS}
    for kind, values in names.items():
        for v in values:
            registries[kind].get(v)


def check_method_resources(methods: Sequence[str], study: Study) -> None:
    """Every training method can run with the sweep's workers and scheduler (its registry entry says)."""
    from cxrray.training.methods import METHODS

    for name in methods:
        METHODS.get(name).check_resources(study.num_workers, study.asha)
