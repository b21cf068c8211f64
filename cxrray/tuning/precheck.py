"""Checks made before Ray starts, each failing in one line: every numeric option in its range, the image size
for every backbone, registry names, a method's resources, and W&B's credentials when logging online."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cxrray.config import WandbMode
from cxrray.registry import UserError
from cxrray.wandb_run import NO_KEY, key_problem, wandb_key, wandb_reachable

if TYPE_CHECKING:
    from cxrray.tuning.options import Study, WandbChoice

def check_image_size(size: int, backbones: Sequence[str]) -> None:
    """The image size fits every backbone of the sweep, before Ray starts (``study.check_image_size``)."""
    from cxrray.tuning.study import check_image_size as check

    check(size, backbones)


def wandb_mode(asked: WandbChoice) -> WandbMode:
    """``online`` only with a key that W&B accepts, checked once before any trial: no key or a rejected one is one
    line, exit 2; a server that is down or failing is one line and the sweep logs offline (``wandb sync`` uploads it
    later, instead of every trial failing after minutes of retries). ``auto``: online when both hold, else offline."""
    if asked in ("offline", "disabled"):
        return asked
    why = NO_KEY if not wandb_key() else wandb_reachable()
    if not why:
        return "online"
    if asked == "auto" or not key_problem(why):
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
