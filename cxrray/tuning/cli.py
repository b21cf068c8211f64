"""What every study CLI in ``sweeps/`` shares: resource and logging options, recipe overrides,
and the rule that bad input ends in one clear line (exit 2), never a traceback.

Nothing heavy at import: ``--help`` is answered without torch, timm or Ray (registry names come from
``cxrray.tuning.names``); the stages are imported by the functions that need them, after parsing."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cxrray.config import RunLayout
from cxrray.declared import add_arguments
from cxrray.registry import UnknownNameError, UserError  # UserError: also for the CLIs in sweeps/
from cxrray.runlock import forget_refused
from cxrray.tuning.names import names as registry_names
from cxrray.tuning.options import ANALYSIS, AXES, DATA, RES, TRAIN, Study
from cxrray.tuning.precheck import (  # noqa: F401  (the sweeps call them as cli.<name>)
    check_image_size,
    check_method_resources,
    check_names,
    wandb_mode,
)

S = TypeVar("S", bound=Study)


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
        leave(143 if term else 130)
    except (UserError, UnknownNameError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        forget_refused()  # a --out this command made and never used is removed
        sys.exit(getattr(exc, "exit_code", 2))
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        print(f"{prog}: error: {exc.filename or 'a file'} cannot be written ({exc.strerror}): the sweep stopped; "
              f"finished trials are kept: fix the storage, then rerun the same command to resume", file=sys.stderr)
        sys.exit(75)


def leave(code: int, wait_s: float = 5.0) -> None:
    """Exit now with ``code`` after stopping Ray for at most ``wait_s``: a SIGTERM sent to the whole process
    group (systemd, Slurm, ``timeout``, ``docker stop``) has killed Ray's own processes too, and Ray's exit
    handler then waited 60 s for the dead GCS and exited 1 over the line already printed."""
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        done = threading.Thread(target=ray.shutdown, daemon=True)
        done.start()
        done.join(wait_s)
    os._exit(code)


def registry_listing(registry: str) -> tuple[str, ...]:
    """The valid names of ``registry`` (backbone, representation, task, recipe ...) for a --help line, without
    importing the stages that register them (tasks: numpy only)."""
    if registry == "task":
        from cxrray.data.tasks import TASKS

        return tuple(TASKS.names())
    if registry == "design":
        from cxrray.data.designs import DESIGNS

        return tuple(DESIGNS.names())
    return registry_names(registry)


def study_parser(description: str | None, kind: type[Study]) -> argparse.ArgumentParser:
    """A study command's parser, every option generated from ``kind``'s declared fields (their type, range and
    help: ``cxrray.declared``). It has no defaults (``argument_default=SUPPRESS``): parsing yields only what the
    command line gave, and every default lives on the command's ``Study`` record."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    groups = {g: p.add_argument_group(g) for g in (DATA, AXES, TRAIN, RES, ANALYSIS)}
    add_arguments(p, kind, names=registry_listing, groups=groups, ranged=False)  # (Study.check: files too)
    return p


def parse_study(p: argparse.ArgumentParser, argv: list[str] | None, kind: type[S]) -> S:
    """Parse a study command into its frozen ``Study`` record (``kind``), with ``--preset`` and ``--config
    study.yaml``: command line > file > ``--smoke-test`` > preset > the record's defaults, field by field.

    The file is checked against the record's fields (a misspelt key, a wrong type or an unknown choice names the
    file and the key), and every choice is checked (``Study.check``) before Ray starts. ``--wandb auto`` is
    resolved here, once."""
    p.add_argument("--config", type=Path, help="YAML study file; its keys are this command's options "
                   "(image_size or image-size, backbones, seeds, recipe, ...), relative paths are relative to it")
    described = {"demo": "this machine, minutes; the default", "paper": "the study's full sizes and recipes",
                 "cluster": "larger, for a GPU cluster"}
    p.add_argument("--preset", choices=sorted(kind.presets), help="study size: " + "; ".join(
        f"{name} ({described.get(name, 'a study preset')})" for name in sorted(kind.presets)))
    given = vars(p.parse_args(argv))
    config = given.pop("config", None)
    file = kind.read_file(config) if config else {}
    study = kind.resolve(given, file, where=str(config) if config else "").derive()
    study.check()
    study = dataclasses.replace(study, wandb=wandb_mode(study.wandb))
    if study.entity:  # W&B reads it here and start_ray hands it to the workers
        os.environ["WANDB_ENTITY"] = study.entity
    return study


def checked_manifest(path: Path, task: str | None = None, *, fractions: tuple[float, ...] = (0.6, 0.2, 0.2),
                     seed: int = 0, mask_unet: Path | None = None, masks_dir: Path | None = None):
    """``read_manifest`` plus, before Ray starts: the leakage check of a given ``split`` column (file, patient
    and rows named); a manifest whose every row is quarantined; and with ``task``, a class of the task missing
    or too few patients for the split (``data.checks``). ``mask_unet``: supplied masks checked against the
    U-Net's lungs of their image and, with ``masks_dir``, the U-Net's lungs as the mask of every row without one;
    else rows without a mask (which the ingest quarantines) must leave every split every class."""
    import polars as pl

    from cxrray.data.checks import SPLIT_NAMES, check_files_exist, check_rows_left, check_task_data, check_what_is_left
    from cxrray.data.manifest import read_manifest
    from cxrray.data.splits import check_no_leakage

    rows, quarantine = read_manifest(path)
    check_rows_left(rows, quarantine, path)
    check_files_exist(rows, path)
    if "split" in rows.columns:
        check_no_leakage(rows.filter(pl.col("split") != ""))
    split = check_task_data(rows, task, path, fractions=fractions, seed=seed) if task is not None else None
    if mask_unet is not None:
        from cxrray.segmentation.job import fill_missing_masks
        from cxrray.segmentation.maskcheck import quarantine_foreign_masks

        rows, quarantine = quarantine_foreign_masks(rows, quarantine, mask_unet)
        check_rows_left(rows, quarantine, path)
        if masks_dir is not None and (rows["mask_path"] == "").any():
            rows = fill_missing_masks(rows, mask_unet, masks_dir)
    if split is not None:  # what the ingest will leave out: rows the mask check moved, rows without a mask
        kept = split.select("row", "split").join(rows, on="row")
        lost = pl.concat([quarantine.filter(pl.col("row").is_in(split["row"].implode())).select("reason"),
                          kept.filter(pl.col("mask_path") == "").select(pl.format(
                              "row {}: {}: no lung mask (mask_path is empty)", "row", "image_path").alias("reason"))])
        check_what_is_left(kept.filter(pl.col("mask_path") != ""), lost, task or "", path,
                           names=SPLIT_NAMES[:len(fractions)], when="before the ingest")
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
    COVID-19 phantom), ``pneumothorax`` (``confound``: the share of positives with a chest drain) or ``border``
    (COVID-19 only in a rim just inside the lung border that the masks miss: ``data.phantom_border``)."""
    from cxrray.data.phantom import SIGNATURE, write_phantom

    if manifest is not None:
        return manifest
    if kind == "pneumothorax":
        from cxrray.data.phantom_findings import write_pneumothorax_phantom

        return generated(run_dir, "pneumothorax", {"patients": n_patients, "drain": confound, "seed": seed},
                         lambda d: write_pneumothorax_phantom(d, n_patients=n_patients, drain=confound, seed=seed))
    if kind == "border":
        from cxrray.data.phantom_border import write_border_phantom

        return generated(run_dir, "border", {"patients": n_patients, "seed": seed},
                         lambda d: write_border_phantom(d, n_patients=n_patients, seed=seed))
    strength = SIGNATURE if signature is None else signature
    return generated(run_dir, "phantom", {"patients": n_patients, "confound": confound, "seed": seed,
                                          "signature": strength},
                     lambda d: write_phantom(d, n_patients=n_patients, confound=confound, seed=seed,
                                             signature=strength))
