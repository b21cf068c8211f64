"""What every study CLI in ``sweeps/`` shares: resource and logging options, recipe overrides,
and the rule that bad input ends in one clear line (exit 2), never a traceback.

Nothing heavy at import: ``--help`` is answered without torch, timm or Ray (registry names come from
``cxrray.tuning.names``); the stages are imported by the functions that need them, after parsing."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrray import provenance
from cxrray.config import RunLayout
from cxrray.registry import UnknownNameError, UserError  # UserError: also for the CLIs in sweeps/
from cxrray.tuning.names import names as registry_names
from cxrray.tuning.precheck import (  # noqa: F401  (the sweeps call them as cli.<name>)
    check_image_size,
    check_method_resources,
    check_names,
    check_numbers,
    wandb_mode,
)

if TYPE_CHECKING:
    from cxrray.config import TrainRecipe
    from cxrray.tuning.asha import EarlyStop
    from cxrray.tuning.study import Resources


def valid_names(what: str, registry: str) -> str:
    """Help text that lists a registry's names (``registry``: backbone, representation or task), so ``--help``
    says what is valid and the sweeps need not import the registries' stages."""
    if registry == "task":
        from cxrray.data.tasks import TASKS  # numpy only

        names = TASKS.names()
    else:
        names = registry_names(registry)
    return f"{what}; valid: {', '.join(names)}"


def add_training_args(p: argparse.ArgumentParser, default_recipe: str, image_size: int) -> None:
    t = p.add_argument_group("training")
    t.add_argument("--image-size", type=int, default=image_size, help="side of the square model input in px "
                   f"(default {image_size})")
    recipes = ", ".join(registry_names("recipe"))
    t.add_argument("--recipe", default=default_recipe,
                   help=f"optimisation preset ({recipes}); the options below override it")
    t.add_argument("--epochs", type=int, help="training epochs per trial (default: the recipe's)")
    t.add_argument("--batch-size", type=int, help="images per optimiser step and worker (default: the recipe's)")
    t.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    t.add_argument("--pretrained", action="store_true", help="ImageNet weights (falls back to random offline)")
    t.add_argument("--weights", help="local ImageNet state-dict file for --pretrained (no download; "
                   "a timm/torch cache is used through HF_HOME / TORCH_HOME)")
    t.add_argument("--no-augment", action="store_true", help="train without the affine and intensity "
                   "augmentation (rotation, translation, zoom, intensity shift)")
    t.add_argument("--balanced", action="store_true", help="class-balanced batches")
    t.add_argument("--search", nargs="+", default=[], metavar="FIELD=V1,V2",
                   help="hyper-parameter axes over recipe fields, e.g. lr=1e-3,1e-4 batch_size=16,32; every "
                   "setting trains, the analysis keeps per cell the one with the best validation AUROC")
    t.add_argument("--asha", action="store_true", help="ASHA early stopping of weak --search settings, compared "
                   "only within their protocol cell (every representation/backbone/seed cell still finishes)")
    t.add_argument("--asha-grace", type=int, default=1, help="epochs before ASHA first judges a setting")
    t.add_argument("--asha-reduction", type=float, default=2.0, help="ASHA keeps the top 1/R at each rung")


def add_mask_arg(d: argparse._ArgumentGroup) -> None:
    """``--masks-unchecked``: the one opt-out of the lung-mask plausibility gate."""
    d.add_argument("--masks-unchecked", action="store_true", help="use supplied lung masks without the "
                   "plausibility gate (non-empty, two regions, 8-60 %% of the image, inside the body) that "
                   "otherwise sends a failing row to quarantine.csv with the reason")


def add_resource_args(p: argparse.ArgumentParser, out: str) -> None:
    r = p.add_argument_group("resources and logging")
    r.add_argument("--out", type=Path, default=Path(out), help="run directory (resumes if it exists)")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (every run does; "
                   "this flag also checks that there is one): unfinished trials go on from their last epoch "
                   "checkpoint, finished ones are never rerun")
    r.add_argument("--storage", help="Ray checkpoint storage (default <out>/ray); on a multi-node cluster a "
                   "shared path (NFS) or a cloud URI (s3://..., gs://...) that every node reaches")
    r.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per trial")
    r.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves per training worker")
    r.add_argument("--gpu", action="store_true", help="one GPU per worker")
    r.add_argument("--launcher", choices=["auto", "inline", "train"], default="auto",
                   help="inline: a one-worker trial trains inside its (reused) Tune actor, seconds of start-up "
                   "per trial; train: a Ray Train worker group per trial; auto (default): inline for one worker")
    r.add_argument("--max-concurrent", type=int, help="trials running at once (default: as many as the cluster's "
                   "CPUs and GPUs hold, each trial reserving its worker(s); an autoscaling cluster grows for the "
                   "pending ones)")
    r.add_argument("--data-cpus", type=float, default=1.0, help="CPUs a multi-worker (Ray Train) trial reserves "
                   "next to its workers for the Ray Data tasks that stream its shards, so that training can never "
                   "starve them (default 1); an inline trial streams its shards in its own process")
    r.add_argument("--checkpoint-every-s", type=float, default=30.0, help="epoch checkpoints at most this often "
                   "(seconds; the first epoch of each attempt always): a resume or retry redoes at most this much")
    r.add_argument("--max-failures", type=int, default=1, help="retries of a failing trial from its checkpoint")
    r.add_argument("--wandb", choices=["offline", "online", "auto", "disabled"], default="offline",
                   help="W&B logging: offline run files under --out (default), online (needs WANDB_API_KEY or "
                        "`wandb login`, checked before any trial starts), auto (online when a key is set and W&B "
                        "answers, else offline, said in one line), or disabled")
    r.add_argument("--project", default="cxrray", help="W&B project of the trial and summary runs")
    r.add_argument("--entity", help="W&B entity (user or team) of the runs; default: WANDB_ENTITY, else your "
                   "default entity. With WANDB_API_KEY it is passed to every Ray worker")
    r.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: every core; ignored "
                   "with --address)")
    r.add_argument("--verbose", action="store_true", help="stream Ray worker logs to the terminal")


def recipe_from(args: argparse.Namespace, name: str | None = None) -> TrainRecipe:
    """Preset ``name`` (default ``--recipe``) with the command line's overrides applied."""
    from cxrray.training.recipes import RECIPES

    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr))
                 if v is not None}
    flags = ({"augment": False} if args.no_augment else {}) | ({"balanced": True} if args.balanced else {})
    return dataclasses.replace(RECIPES.get(name or args.recipe), **overrides, **flags)


def sweep_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``run_sweep`` / ``run_waves`` that come from the command line."""
    return {"resources": resources_from(args), "wandb_mode": args.wandb, "project": args.project,
            "weights": args.weights, "storage": args.storage, "early_stop": early_stop_from(args)}


def early_stop_from(args: argparse.Namespace) -> EarlyStop | None:
    """``--asha``: ASHA over the ``--search`` axes (an error without them: protocol axes never stop early)."""
    from cxrray.tuning.asha import EarlyStop
    from cxrray.tuning.study import parse_search

    if not args.asha:
        return None
    return EarlyStop(tuple(sorted(parse_search(args.search))), args.asha_grace, args.asha_reduction)


def resources_from(args: argparse.Namespace) -> Resources:
    from cxrray.tuning.study import Resources

    return Resources(num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu,
                     max_concurrent_trials=args.max_concurrent, max_failures=args.max_failures,
                     launcher=args.launcher, checkpoint_every_s=args.checkpoint_every_s, data_cpus=args.data_cpus)


def run_cli(main: Callable[[], int], prog: str) -> None:
    """Exit with ``main()``'s code; bad input (``UserError``: manifest, leakage, options, study files; an unknown
    registry name) is one line on stderr, exit 2. ``--out`` failing under a running sweep (disk full, read-only:
    ``StorageError`` or such an ``OSError``) is one line too, exit 75: rerun once fixed, the run resumes. Any
    other exception is a bug and keeps its traceback."""
    from cxrray.tuning.storage import STORAGE_ERRNOS

    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (tuning.runner.Terminated): one line, resumable
        term = type(exc).__name__ == "Terminated"
        print(f"{prog}: stopped by {'SIGTERM' if term else 'Ctrl-C'}: finished trials are kept; rerun the same "
              f"command to resume", file=sys.stderr)
        sys.exit(143 if term else 130)
    except (UserError, UnknownNameError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        print(f"{prog}: error: {exc.filename or 'a file'} cannot be written ({exc.strerror}): the sweep stopped; "
              f"finished trials are kept: fix the storage, then rerun the same command to resume", file=sys.stderr)
        sys.exit(75)


def parse_study(p: argparse.ArgumentParser, argv: list[str] | None, study: str,
                presets: Mapping[str, Mapping[str, Any]]) -> argparse.Namespace:
    """Parse a study CLI with ``--preset`` and ``--config study.yaml``.

    Precedence: command line > YAML file > preset > built-in defaults. The YAML is
    checked against the parser (the study's typed options) before anything runs:
    an unknown or misspelt key, a wrong type or an unknown choice is an error that
    names the file and the key.
    """
    p.add_argument("--config", type=Path, help="YAML study file; its keys are this command's options "
                   "(image_size or image-size, backbones, seeds, recipe, ...), relative paths are relative to it")
    described = {"demo": "this machine, minutes; the default", "paper": "the study's full sizes and recipes",
                 "cluster": "larger, for a GPU cluster"}
    p.add_argument("--preset", choices=sorted(presets), help="study size: " + "; ".join(
        f"{name} ({described.get(name, 'a study preset')})" for name in sorted(presets)))
    pre, _ = p.parse_known_args(argv)
    values = load_study_yaml(pre.config, p, study) if pre.config else {}
    preset = pre.preset or values.pop("preset", None) or "demo"
    values.pop("preset", None)
    if preset not in presets:
        raise UserError(f"{pre.config}: unknown preset {preset!r}; valid: {sorted(presets)}")
    p.set_defaults(**(dict(presets[preset]) | values), preset=preset)
    args = p.parse_args(argv)
    from cxrray.tuning.study import parse_search

    parse_search(args.search)  # a bad hyper-parameter axis fails here, before Ray starts
    check_numbers(args)
    early = early_stop_from(args)  # --asha without --search fails here too
    if early is not None and not resources_from(args).inline():
        raise UserError("--asha needs one-worker inline trials (--num-workers 1, --launcher auto or inline)")
    if args.resume and not (args.out / "ray").exists() and not args.storage:
        raise UserError(f"--resume: nothing to resume in {args.out.resolve()} (no ray/ folder)")
    args.wandb = wandb_mode(args.wandb)
    if args.entity:  # W&B reads it here and start_ray hands it to the workers
        os.environ["WANDB_ENTITY"] = args.entity
    return args


def record_study(args: argparse.Namespace, study: str, argv: list[str] | None = None) -> None:
    """Take ``--out``'s lock (one sweep per run directory; a second is refused naming the first), then write
    ``--out``/study.yaml (what ``--config`` reruns) and this invocation in ``--out``/provenance.json."""
    from cxrray.runlock import claim

    claim(args.out)
    provenance.record(RunLayout(args.out.resolve()), study, vars(args), argv)


def load_study_yaml(path: Path, p: argparse.ArgumentParser, study: str) -> dict[str, Any]:
    """Read and validate a YAML study file against the parser's options; returns option values."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: study file not found") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a study file is a mapping of option: value, got {type(raw).__name__}")
    if raw.pop("study", study) != study:
        raise UserError(f"{path}: this is a study for another command (study: {raw.get('study')}); run it "
                         f"with sweeps/<study>.py")
    actions = {a.dest: a for a in p._actions if a.dest not in ("help", "config")}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            near = difflib.get_close_matches(dest, list(actions), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UserError(f"{path}: unknown key {key!r} for study {study}{hint}; valid: {sorted(actions)}")
        out[dest] = _typed(actions[dest], value, f"{path}: key {key!r}", Path(path).parent)
    return out


def _typed(action: argparse.Action, value: Any, where: str, base: Path) -> Any:
    """Convert a YAML value the way argparse would convert the same option on the command line."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    items = value if isinstance(value, list) else [value]
    if not many and isinstance(value, list):
        raise UserError(f"{where} takes one value, got a list")
    conv = []
    for item in items:
        if action.type in (int, float) and isinstance(item, bool):
            raise UserError(f"{where}: {item!r} is not a number")
        if action.type is int and isinstance(item, float) and not item.is_integer():
            raise UserError(f"{where}: {item!r} is not a whole number (the option takes an integer)")
        try:
            v = action.type(item) if action.type is not None and item is not None else item
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: {item!r} is not a valid {getattr(action.type, '__name__', 'value')} "
                             f"({exc})") from None
        if isinstance(v, Path) and not v.is_absolute():
            v = (base / v).resolve()
        if action.choices is not None and v not in action.choices:
            raise UserError(f"{where}: {v!r} is not one of {sorted(action.choices)}")
        conv.append(v)
    return conv if many else conv[0]


def given(argv: list[str] | None, option: str) -> bool:
    """Whether the command line itself names ``option`` (``--epochs 3`` or ``--epochs=3``)."""
    words = argv if argv is not None else sys.argv[1:]
    return any(a == option or a.startswith(option + "=") for a in words)


def smoke_epochs(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Epochs of a ``--smoke-test``: 1 unless ``--epochs`` was given on the command line."""
    return args.epochs if given(argv, "--epochs") else 1


def smoke_size(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Image size of a ``--smoke-test``: 32 px unless ``--image-size`` was given on the command line (a smoke test
    is a preset that never overrides what the user gave)."""
    return args.image_size if given(argv, "--image-size") else 32


def checked_manifest(path: Path, task: str | None = None, *, fractions: tuple[float, ...] = (0.6, 0.2, 0.2),
                     seed: int = 0):
    """``read_manifest`` plus, before Ray starts: the leakage check of a given ``split`` column (file, patient
    and rows named); a manifest whose every row is quarantined; and with ``task``, a class of the task missing
    or too few patients for the split (``data.checks``)."""
    import polars as pl

    from cxrray.data.checks import check_files_exist, check_rows_left, check_task_data
    from cxrray.data.manifest import read_manifest
    from cxrray.data.splits import check_no_leakage

    rows, quarantine = read_manifest(path)
    check_rows_left(rows, quarantine, path)
    check_files_exist(rows, path)
    if "split" in rows.columns:
        check_no_leakage(rows.filter(pl.col("split") != ""))
    if task is not None:
        check_task_data(rows, task, path, fractions=fractions, seed=seed)
    return rows, quarantine


def generated_manifest(run_dir: Path, key: str = "phantom") -> Path:
    """Where a run keeps the manifest of a dataset it generated (a phantom or a phantom stand-in)."""
    return RunLayout(Path(run_dir)).data(key) / "manifest.csv"


def generated(run_dir: Path, key: str, params: Mapping[str, Any], make: Callable[[Path], Any]) -> Path:
    """The manifest of a dataset the run generates (``make(folder)``), made once and keyed by its parameters:
    an ``--out`` that already holds one made with other parameters is refused (a negative control must not
    silently reuse the positive one's data)."""
    import json

    path = generated_manifest(run_dir, key)
    record = path.parent / "parameters.json"
    wanted = json.loads(json.dumps(dict(params)))
    if path.exists():
        held = json.loads(record.read_text()) if record.exists() else None
        if held is not None and held != wanted:
            diff = ", ".join(f"{k} {held.get(k)} (asked {v})" for k, v in wanted.items() if held.get(k) != v)
            raise UserError(f"{run_dir}: holds the {key} dataset made with {diff}; use another --out for these "
                            f"parameters")
        return path
    print(f"[cxrray] generating {key}: " + ", ".join(f"{k} {v}" for k, v in wanted.items()), flush=True)
    make(path.parent)
    record.write_text(json.dumps(wanted, indent=1))
    return path


def phantom_or_manifest(run_dir: Path, manifest: Path | None, *, n_patients: int, confound: float,
                        seed: int, signature: float | None = None, kind: str = "covid") -> Path:
    """The given manifest, or an embedded phantom (generated once under ``run_dir/data/<kind>``, keyed by its
    parameters; ``signature`` None is the phantom's default strength): ``covid`` (the source-confounded
    COVID-19 phantom) or ``pneumothorax`` (``confound``: the share of positives with a chest drain)."""
    from cxrray.data.phantom import SIGNATURE, write_phantom

    if manifest is not None:
        return manifest
    if kind == "pneumothorax":
        from cxrray.data.phantom_findings import write_pneumothorax_phantom

        return generated(run_dir, "pneumothorax", {"patients": n_patients, "drain": confound, "seed": seed},
                         lambda d: write_pneumothorax_phantom(d, n_patients=n_patients, drain=confound, seed=seed))
    strength = SIGNATURE if signature is None else signature
    return generated(run_dir, "phantom", {"patients": n_patients, "confound": confound, "seed": seed,
                                          "signature": strength},
                     lambda d: write_phantom(d, n_patients=n_patients, confound=confound, seed=seed,
                                             signature=strength))
