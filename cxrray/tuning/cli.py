"""What every study CLI in ``sweeps/`` shares: resource and logging options, recipe overrides,
and the rule that bad input ends in one clear line (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from cxrray.config import TrainRecipe
from cxrray.registry import UnknownNameError
from cxrray.training.recipes import RECIPES
from cxrray.tuning.study import Resources


def add_training_args(p: argparse.ArgumentParser, default_recipe: str, image_size: int) -> None:
    t = p.add_argument_group("training")
    t.add_argument("--image-size", type=int, default=image_size)
    t.add_argument("--recipe", default=default_recipe, help=f"optimisation preset ({', '.join(RECIPES.names())}); "
                   "the options below override it")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--pretrained", action="store_true", help="ImageNet weights (falls back to random offline)")
    t.add_argument("--weights", help="local ImageNet state-dict file for --pretrained (no download; "
                   "a timm/torch cache is used through HF_HOME / TORCH_HOME)")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--balanced", action="store_true", help="class-balanced batches")


def add_resource_args(p: argparse.ArgumentParser, out: str) -> None:
    r = p.add_argument_group("resources and logging")
    r.add_argument("--out", type=Path, default=Path(out), help="run directory (resumes if it exists)")
    r.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per trial")
    r.add_argument("--cpus-per-worker", type=float, default=1.0)
    r.add_argument("--gpu", action="store_true", help="one GPU per worker")
    r.add_argument("--max-concurrent", type=int, default=1, help="trials running at once")
    r.add_argument("--max-failures", type=int, default=1, help="retries of a failing trial from its checkpoint")
    r.add_argument("--wandb", choices=["offline", "online", "disabled"], default="offline")
    r.add_argument("--project", default="cxrray")
    r.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    r.add_argument("--verbose", action="store_true", help="stream Ray worker logs to the terminal")


def recipe_from(args: argparse.Namespace, name: str | None = None) -> TrainRecipe:
    """Preset ``name`` (default ``--recipe``) with the command line's overrides applied."""
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr))
                 if v is not None}
    flags = ({"augment": False} if args.no_augment else {}) | ({"balanced": True} if args.balanced else {})
    return dataclasses.replace(RECIPES.get(name or args.recipe), **overrides, **flags)


def resources_from(args: argparse.Namespace) -> Resources:
    return Resources(num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu,
                     max_concurrent_trials=args.max_concurrent, max_failures=args.max_failures)


def run_cli(main: Callable[[], int], prog: str) -> None:
    """Exit with ``main()``'s code; bad input (manifest, leakage, names) is one line on stderr, exit 2."""
    try:
        sys.exit(main())
    except (ValueError, UnknownNameError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
