"""``Study``: the one frozen, typed record of a study command's options, resolved once and handed on.

The command line, the ``--config`` study file and the ``--preset`` resolve field by field, command line > file >
``--smoke-test`` > preset > the record's defaults (a smoke test is a preset that never overrides what the user
gave). The study file is checked against the record's fields and their types, so a misspelt key or a wrong type
names the file and the key before Ray starts. ``study.yaml`` is ``to_dict``. Each command in ``sweeps/`` declares
its subclass (its own axes, presets and checks); the sweeps hand the record on, never an argparse namespace.

Light at import (standard library and the registry error): ``--help`` costs no torch, timm or Ray.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from cxrray.config import WandbMode
from cxrray.registry import UserError

if TYPE_CHECKING:
    from cxrray.config import TrainRecipe
    from cxrray.tuning.asha import EarlyStop
    from cxrray.tuning.study import Resources, SweepOptions

HOW = {"how": True}  # field metadata: how this invocation runs, not what the study is (left out of study.yaml)
Launcher = Literal["auto", "inline", "train"]
WandbChoice = Literal["offline", "online", "auto", "disabled"]


@dataclass(frozen=True)
class Study:
    """The options every study command shares (training, resources, logging); a command's subclass adds its axes.

    ``epochs``, ``batch_size`` and ``lr`` of None mean the recipe's own."""

    name: ClassVar[str] = "study"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"demo": {}}
    smoke: ClassVar[Mapping[str, Any]] = {}  # what --smoke-test sets (below the file and the command line)
    axes: ClassVar[tuple[str, ...]] = ()  # the tuple fields whose cross-product is the sweep's trials

    preset: str = "demo"
    out: Path = Path("runs/study")
    # training
    image_size: int = 64
    recipe: str = "demo"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    pretrained: bool = False
    weights: Path | None = None
    no_augment: bool = False
    balanced: bool = False
    search: tuple[str, ...] = ()
    asha: bool = False
    asha_grace: int = 1
    asha_reduction: float = 2.0
    # resources and logging
    resume: bool = field(default=False, metadata=HOW)
    storage: str | None = None
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpu: bool = False
    launcher: Launcher = "auto"
    max_concurrent: int | None = None
    data_cpus: float = 1.0
    checkpoint_every_s: float = 30.0
    max_failures: int = 1
    max_trials: int = 10_000  # a sweep larger than this is refused before Ray starts (a typo such as 800,000 seeds)
    wandb: WandbChoice = "offline"
    project: str = "cxrray"
    entity: str | None = None
    address: str | None = None
    num_cpus: int | None = None
    verbose: bool = field(default=False, metadata=HOW)
    # the analysis at the end of the sweep
    analysis: Literal["all", "statistics"] = "all"
    skip: tuple[str, ...] = ()

    # ---- resolution -------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def resolve(cls, given: Mapping[str, Any], file: Mapping[str, Any] | None = None, where: str = "") -> Self:
        """The record from the options the command line gave (``given``: only those), the study file's values
        (``file``, already typed by ``read_file``) and the preset they name: command line > file > smoke test >
        preset > defaults, field by field. ``where`` names the file in errors."""
        file = dict(file or {})
        preset = given.get("preset") or file.get("preset") or "demo"
        if preset not in cls.presets:
            raise UserError(f"{where or '--preset'}: unknown preset {preset!r}; valid: {sorted(cls.presets)}")
        smoke = bool(given.get("smoke_test", file.get("smoke_test", False)))
        layers = [(f"preset {preset}", cls.presets[preset]), ("--smoke-test", cls.smoke if smoke else {}),
                  (where or "study file", file), ("command line", given)]
        values: dict[str, Any] = {}
        for what, layer in layers:
            values |= {k: cls.convert(k, v, f"{what}: {k}") for k, v in layer.items()}
        return cls(**(values | {"preset": preset}))

    @classmethod
    def read_file(cls, path: Path) -> dict[str, Any]:
        """A YAML study file's values, each checked against the record's field of that name (its type, its
        choices); relative paths are relative to the file. Errors name the file and the key."""
        import yaml

        try:
            raw = yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 6x
        except FileNotFoundError:
            raise UserError(f"{path}: study file not found") from None
        except IsADirectoryError:
            raise UserError(f"{path}: is a folder; --config takes a YAML study file (a run's study.yaml, for "
                            f"instance)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot be read as a study file ({exc})") from None
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a study file is a mapping of option: value, got {type(raw).__name__}")
        if raw.pop("study", cls.name) != cls.name:
            raise UserError(f"{path}: this is a study for another command (study: {raw.get('study')}); run it "
                            f"with sweeps/<study>.py")
        names = cls.field_names()
        out: dict[str, Any] = {}
        for key, value in raw.items():
            name = str(key).replace("-", "_")
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise UserError(f"{path}: unknown key {key!r} for study {cls.name}{hint}; valid: {sorted(names)}")
            out[name] = cls.convert(name, value, f"{path}: key {key!r}", Path(path).parent)
        return out

    @classmethod
    def convert(cls, name: str, value: Any, where: str, base: Path | None = None) -> Any:
        """``value`` as field ``name``'s type: a list for a tuple field (one value reads as a list of one), a whole
        number for an int, true/false for a bool, one of a Literal's choices; a relative path joined to ``base``."""
        hint = typing.get_type_hints(cls, localns=globals())[name]  # a subclass may use this module's names
        return _as(hint, value, where, base)

    # ---- what the stages after the CLI receive -----------------------------------------------------------------
    def derive(self) -> Self:
        """Fields whose default depends on other fields (a command's subclass fills them)."""
        return self

    def check(self) -> None:
        """Every choice valid before Ray starts: numbers in range, search axes, ASHA's needs, a resume target."""
        from cxrray.tuning.study import parse_search

        parse_search(self.search)  # a bad hyper-parameter axis fails here
        check_numbers(self)
        if self.early_stop() is not None and not self.resources().inline():  # --asha without --search fails too
            raise UserError("--asha needs one-worker inline trials (--num-workers 1, --launcher auto or inline)")
        if self.address and self.num_cpus is not None:
            raise UserError(f"--num-cpus {self.num_cpus} sizes a Ray instance of the sweep's own; with --address "
                            f"{self.address} the cluster's own CPUs count: drop --num-cpus")
        bound = self.trial_bound()
        if bound > self.max_trials:
            sizes = " x ".join(f"{len(getattr(self, a))} {a}" for a in self.axes)
            raise UserError(f"about {bound} trials ({sizes}{' x the --search settings' if self.search else ''}) "
                            f"is more than --max-trials {self.max_trials}; raise --max-trials if this is meant")
        if self.resume and not (self.out / "ray").exists() and not self.storage:
            raise UserError(f"--resume: nothing to resume in {self.out.resolve()} (no ray/ folder)")

    def trial_bound(self) -> int:
        """The cross-product of the axes and the ``--search`` settings: the sweep's size before anything is built
        (folds and stages make it larger, the lung-hiding-only dilation smaller; ``run_sweep`` checks the exact
        count again before any trial)."""
        from math import prod

        from cxrray.tuning.study import parse_search

        settings = prod(map(len, parse_search(self.search).values()))
        return prod(max(len(getattr(self, a)), 1) for a in self.axes) * settings

    def to_dict(self) -> dict[str, Any]:
        """What the study is, as YAML-able values (paths absolute, so ``--config study.yaml`` works anywhere);
        how this invocation ran (``--resume``, ``--verbose``) is left out."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("how"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value.resolve())
            elif isinstance(value, tuple):
                value = [str(v.resolve()) if isinstance(v, Path) else v for v in value]
            out[f.name] = value
        return out

    def train_recipe(self, name: str | None = None) -> TrainRecipe:
        """Recipe ``name`` (default the study's) with the study's overrides applied."""
        from cxrray.training.recipes import RECIPES

        recipe = RECIPES.get(name or self.recipe)
        return dataclasses.replace(
            recipe, epochs=recipe.epochs if self.epochs is None else self.epochs,
            batch_size=recipe.batch_size if self.batch_size is None else self.batch_size,
            lr=recipe.lr if self.lr is None else self.lr, augment=recipe.augment and not self.no_augment,
            balanced=recipe.balanced or self.balanced)

    def resources(self) -> Resources:
        from cxrray.tuning.study import Resources

        return Resources(num_workers=self.num_workers, cpus_per_worker=self.cpus_per_worker, use_gpu=self.gpu,
                         max_concurrent_trials=self.max_concurrent, max_failures=self.max_failures,
                         launcher=self.launcher, checkpoint_every_s=self.checkpoint_every_s, data_cpus=self.data_cpus)

    def early_stop(self) -> EarlyStop | None:
        """``--asha``: ASHA over the ``--search`` axes (an error without them: protocol axes never stop early)."""
        from cxrray.tuning.asha import EarlyStop
        from cxrray.tuning.study import parse_search

        if not self.asha:
            return None
        return EarlyStop(tuple(sorted(parse_search(self.search))), self.asha_grace, self.asha_reduction)

    @property
    def wandb_mode(self) -> WandbMode:
        """The mode the trials log in: ``auto`` is resolved by ``parse_study`` before Ray starts (``precheck``);
        a study record made in code that still says ``auto`` logs offline."""
        return "offline" if self.wandb == "auto" else self.wandb

    def sweep_options(self) -> SweepOptions:
        """How the sweep runs its trials (``run_sweep`` / ``run_waves``), from the study."""
        from cxrray.tuning.study import SweepOptions

        return SweepOptions(resources=self.resources(), wandb_mode=self.wandb_mode, project=self.project,
                            weights=str(self.weights) if self.weights else None, storage=self.storage,
                            early_stop=self.early_stop(), max_trials=self.max_trials)

    def claim(self) -> None:
        """Take ``out``'s lock (one sweep per run directory; a second is refused naming the first)."""
        from cxrray.runlock import claim

        claim(self.out)

    def record(self, argv: list[str] | None = None) -> None:
        """Take ``out``'s lock, then write ``out``/study.yaml (``to_dict``, what ``--config`` reruns) and this
        invocation in ``out``/provenance.json: once the input is checked (a refused run leaves neither)."""
        from cxrray import provenance
        from cxrray.config import RunLayout

        self.claim()
        provenance.record(RunLayout(self.out.resolve()), self.name, self.to_dict(), argv)


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


def _as(hint: Any, value: Any, where: str, base: Path | None) -> Any:
    """Convert one value to a field type (see ``Study.convert``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _as(next(a for a in args if a is not type(None)), value, where, base)
    if origin is tuple:  # an axis: a value given twice is one (--seeds 0 0 is --seeds 0), the rule everywhere
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(dict.fromkeys(_as(args[0], v, where, base) for v in items))
    if isinstance(value, (list, tuple)):
        raise UserError(f"{where} takes one value, got a list")
    if origin is Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not one of {sorted(args)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float) and isinstance(value, bool):
        raise UserError(f"{where}: {value!r} is not a number")
    if hint is int and isinstance(value, float) and not value.is_integer():
        raise UserError(f"{where}: {value!r} is not a whole number (the option takes an integer)")
    try:
        out = hint(value)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {value!r} is not a valid {getattr(hint, '__name__', 'value')} ({exc})") from None
    if isinstance(out, Path) and base is not None and not out.is_absolute():
        out = (base / out).resolve()
    return out
