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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from cxrray.config import WandbMode
from cxrray.declared import check_ranges, declared, option
from cxrray.models.names import absolute
from cxrray.registry import UserError

if TYPE_CHECKING:
    from cxrray.config import TrainRecipe
    from cxrray.tuning.asha import EarlyStop
    from cxrray.tuning.study import Resources, SweepOptions

TRAIN, RES, DATA, AXES = "training", "resources and logging", "data", "sweep axes"  # the --help sections
ANALYSIS = "analysis at the end of the sweep (rerun any time: python -m cxrray.analysis --out DIR)"
Launcher = Literal["auto", "inline", "train"]
WandbChoice = Literal["offline", "online", "auto", "disabled"]


def out_option(default: str) -> Any:
    """``--out``, with a command's own default run directory."""
    return option(Path(default), "run directory (resumes if it exists)", group=RES)


def masks_unchecked_option() -> Any:
    """``--masks-unchecked``: the one opt-out of the lung-mask checks."""
    return option(False, "use supplied lung masks without the plausibility gate (non-empty, two regions, 8-60 % "
                  "of the image, inside the body; one mask file for one image) that otherwise sends a failing "
                  "row to quarantine.csv with the reason", group=DATA)


def mask_unet_option() -> Any:
    """``--mask-unet``: supplied masks checked against a lung U-Net's view of their image."""
    return option(None, "a lung U-Net (unet.pt of `python -m cxrray.segmentation train`): each supplied mask is "
                  "compared with the U-Net's lungs of its image, before Ray starts, and a mask with lung Dice "
                  "below 0.85 goes to quarantine.csv (it may belong to another image); every row without a mask "
                  "gets the U-Net's lungs as its mask (under OUT/data/masks/)", group=DATA)


@dataclass(frozen=True)
class Study:
    """The options every study command shares (training, resources, logging); a command's subclass adds its axes.

    ``epochs``, ``batch_size`` and ``lr`` of None mean the recipe's own."""

    name: ClassVar[str] = "study"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"demo": {}}
    smoke: ClassVar[Mapping[str, Any]] = {}  # what --smoke-test sets (below the file and the command line)
    axes: ClassVar[tuple[str, ...]] = ()  # the tuple fields whose cross-product is the sweep's trials

    preset: str = "demo"  # (--preset: its choices are the command's presets, added by parse_study)
    out: Path = option(Path("runs/study"), "run directory (resumes if it exists)", group=RES)
    # training
    image_size: int = option(64, "side of the square model input in px", group=TRAIN, lo=16, hi=4096, unit="px")
    recipe: str = option("demo", "optimisation preset; the options below override it", group=TRAIN,
                         registry="recipe")
    epochs: int | None = option(None, "training epochs per trial", group=TRAIN, lo=1, hi=100_000, unit="epochs",
                                default_text="the recipe's")
    batch_size: int | None = option(None, "images per optimiser step and worker", group=TRAIN, lo=1, hi=1_000_000,
                                    unit="images", default_text="the recipe's")
    lr: float | None = option(None, "learning rate", group=TRAIN, lo=1e-12, hi=10.0, default_text="the recipe's")
    pretrained: bool = option(False, "ImageNet weights (falls back to random offline)", group=TRAIN)
    weights: Path | None = option(None, "local ImageNet state-dict file for --pretrained (no download; a "
                                  "timm/torch cache is used through HF_HOME / TORCH_HOME)", group=TRAIN)
    init_weights: Path | None = option(None, "start every trial from this checkpoint (a state dict; the tensors "
                                       "that fit, the head fresh where its shape differs): e.g. the model an audit "
                                       "judged, retrained on every representation; the same as --pretrained "
                                       "--weights FILE", group=TRAIN)
    no_augment: bool = option(False, "train without the affine and intensity augmentation (rotation, "
                              "translation, zoom, intensity shift)", group=TRAIN)
    balanced: bool = option(False, "class-balanced batches", group=TRAIN)
    search: tuple[str, ...] = option((), "hyper-parameter axes over recipe fields, e.g. lr=1e-3,1e-4 "
                                     "batch_size=16,32; every setting trains, the analysis keeps per cell the one "
                                     "with the best validation AUROC", group=TRAIN, metavar="FIELD=V1,V2")
    asha: bool = option(False, "ASHA early stopping of weak --search settings, compared only within their "
                        "protocol cell (every representation/backbone/seed cell still finishes)", group=TRAIN)
    asha_grace: int = option(1, "epochs before ASHA first judges a setting", group=TRAIN, lo=1, hi=100_000,
                             unit="epochs")
    asha_reduction: float = option(2.0, "ASHA keeps the top 1/R at each rung", group=TRAIN, lo=1.01, hi=1000)
    # resources and logging
    resume: bool = option(False, "continue an interrupted run in --out (every run does; this flag also checks "
                          "that there is one): unfinished trials go on from their last epoch checkpoint, finished "
                          "ones are never rerun", group=RES, how=True)
    storage: str | None = option(None, "Ray checkpoint storage; on a multi-node cluster a shared path (NFS) or a "
                                 "cloud URI (s3://..., gs://...) that every node reaches", group=RES,
                                 default_text="<out>/ray")
    num_workers: int = option(1, "Ray Train workers per trial", group=RES, lo=1, hi=10_000, unit="workers")
    cpus_per_worker: float = option(1.0, "CPUs Ray reserves per training worker", group=RES, lo=0.01, hi=1024,
                                    unit="CPUs")
    gpu: bool = option(False, "one GPU per worker", group=RES)
    launcher: Launcher = option("auto", "inline: a one-worker trial trains inside its (reused) Tune actor, "
                                "seconds of start-up per trial; train: a Ray Train worker group per trial; auto: "
                                "inline for one worker", group=RES)
    max_concurrent: int | None = option(None, "trials running at once", group=RES, lo=1, hi=100_000,
                                        unit="trials at once", default_text=(
                                            "as many as the cluster's CPUs and GPUs hold, each trial reserving "
                                            "its worker(s); an autoscaling cluster grows for the pending ones"))
    data_cpus: float = option(1.0, "CPUs a multi-worker (Ray Train) trial reserves next to its workers for the "
                              "Ray Data tasks that stream its shards, so that training can never starve them; an "
                              "inline trial streams its shards in its own process", group=RES, lo=0.0, hi=1024,
                              unit="CPUs")
    checkpoint_every_s: float = option(30.0, "epoch checkpoints at most this often (seconds; the first epoch of "
                                       "each attempt always): a resume or retry redoes at most this much",
                                       group=RES, lo=0.0, hi=1e9, unit="s")
    max_failures: int = option(1, "retries of a failing trial from its checkpoint", group=RES, lo=0, hi=1000,
                               unit="retries")
    max_trials: int = option(10_000, "refuse a sweep of more trials than this, before Ray starts (a typo in "
                             "--seeds is not a million trials)", group=RES, lo=1, hi=100_000_000,
                             unit="trials per command")
    wandb: WandbChoice = option("offline", "W&B logging: offline run files under --out, online (needs "
                                "WANDB_API_KEY or `wandb login`, checked before any trial starts), auto (online "
                                "when a key is set and W&B answers, else offline, said in one line), or disabled",
                                group=RES)
    project: str = option("cxrray", "W&B project of the trial and summary runs", group=RES)
    entity: str | None = option(None, "W&B entity (user or team) of the runs; with WANDB_API_KEY it is passed to "
                                "every Ray worker", group=RES,
                                default_text="WANDB_ENTITY, else your default entity")
    address: str | None = option(None, "join this Ray cluster (auto: the one started on this machine, e.g. the "
                                 "head of `ray up`; said in one line with its nodes, CPUs and GPUs)", group=RES,
                                 default_text="a local Ray instance of the sweep's own, whatever else runs on "
                                 "the machine")
    num_cpus: int | None = option(None, "CPUs of the sweep's local Ray instance (refused with --address: a "
                                  "cluster brings its own)", group=RES, lo=1, hi=100_000, unit="CPUs",
                                  default_text="every core")
    verbose: bool = option(False, "stream Ray worker logs to the terminal", group=RES, how=True)
    # the analysis at the end of the sweep
    analysis: Literal["all", "statistics"] = option(
        "all", "all steps, or statistics: no step that loads the saved models (saliency with its sanity checks, "
        "the transfer matrix), minutes instead of hours for a paper-scale sweep", group=ANALYSIS)
    skip: tuple[str, ...] = option((), "registered analysis steps not to run (for example transfer); the report "
                                   "says which ran", group=ANALYSIS, metavar="STEP")

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

    def __post_init__(self) -> None:
        """A user's ``file:module.py:build`` backbone is named by its absolute path in every study (every Ray
        worker reads the same file); ``--init-weights FILE`` is ``--pretrained --weights FILE`` (one file: a
        second, different one is refused)."""
        backbones = getattr(self, "backbones", None)  # (the studies that have the axis)
        if backbones is not None:
            object.__setattr__(self, "backbones", tuple(absolute(b) for b in backbones))
        if self.init_weights is None:
            return
        if self.weights is not None and Path(self.weights) != Path(self.init_weights):
            raise UserError(f"--init-weights {self.init_weights} and --weights {self.weights} name two files; give one")
        object.__setattr__(self, "pretrained", True)
        object.__setattr__(self, "weights", Path(self.init_weights))

    # ---- what the stages after the CLI receive -----------------------------------------------------------------
    def derive(self) -> Self:
        """Fields whose default depends on other fields (a command's subclass fills them)."""
        return self

    def check(self) -> None:
        """Every choice valid before Ray starts: numbers in range, search axes, ASHA's needs, a resume target."""
        from cxrray.tuning.study import parse_search

        parse_search(self.search)  # a bad hyper-parameter axis fails here
        check_ranges(self)  # (argparse refused the command line's; a study file's values come here)
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
            if (d := declared(f)) is not None and d.how:
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
