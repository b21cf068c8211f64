#!/usr/bin/env python
"""Staged pretraining sweep (Fricks et al. 2021): pretraining paths a-f x seed.

Phase 1 (ChestX-ray14, 14 findings) -> phase 2 (pneumonia at high or low
prevalence) -> phase 3 (the COVID-19 target task); PROTOCOLS.md section 4.
Every distinct upstream phase trains once and hands its checkpoint (not its
head) to every path and seed that needs it; phases run in dependency waves.

With no arguments it runs the CPU demo on phantom stand-ins (a multilabel
ChestX-ray14-like set, pneumonia sets at 24 % and 2 % prevalence, a COVID-19
target set). Real data: name each manifest (the adapters in
``cxrray.data.adapters`` write them: nih14, rsna, covidx ...).

    python sweeps/staged_pretraining.py                      # demo, paths a-f
    python sweeps/staged_pretraining.py --paths a c f --smoke-test
    python sweeps/staged_pretraining.py --nih14 nih/manifest.csv --pneumonia-high rsna/manifest.csv \\
        --pneumonia-low nih_test/manifest.csv --manifest covid/manifest.csv \\
        --backbones densenet121 --pretrained --image-size 512 --recipe staged --gpu
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cxrray.data.phantom import write_phantom
from cxrray.data.phantom_phases import write_multilabel_phantom, write_pneumonia_phantom
from cxrray.tuning import cli
from cxrray.tuning.names import names

DATA_OPTIONS = {"nih14": "nih14", "pneu_high": "pneumonia_high", "pneu_low": "pneumonia_low", "target": "manifest"}


PRESETS = {
    "demo": {"epochs": 4},  # phantom stand-ins, resnet18, 64 px; the recipes' other settings as published
    # Fricks et al.: DenseNet-121 from ImageNet, the staged recipes (up to 100 epochs, early stopping), 512 px.
    "paper": {"backbones": ["densenet121"], "pretrained": True, "image_size": 512, "seeds": [0, 1, 2, 3, 4]},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data (default: phantom stand-ins)")
    d.add_argument("--nih14", type=Path, help="phase-1 manifest with finding_<Name> columns (ChestX-ray14)")
    d.add_argument("--pneumonia-high", type=Path, help="phase-2 manifest, high pneumonia prevalence (RSNA)")
    d.add_argument("--pneumonia-low", type=Path, help="phase-2 manifest, low pneumonia prevalence (NIH test set)")
    d.add_argument("--manifest", type=Path, help="phase-3 (target) manifest")
    d.add_argument("--phantom-patients", type=int, default=120, help="patients per phantom set")
    d.add_argument("--confound", type=float, default=0.5, help="source confound of the target phantom")
    d.add_argument("--split-seed", type=int, default=0, help="seed of the patient-level splits")
    cli.add_mask_arg(d)
    s = p.add_argument_group("sweep axes")
    s.add_argument("--paths", nargs="+", default=list(names("path")), help="pretraining paths (default: a-f)")
    s.add_argument("--backbones", nargs="+", default=["resnet18"],
                   help=cli.valid_names("Fricks et al.: densenet121", "backbone"))
    s.add_argument("--representation", default="original",
                   help=cli.valid_names("input representation of every phase", "representation"))
    s.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the target phase")
    s.add_argument("--task", default="CL2", help=cli.valid_names("target task", "task"))
    cli.add_training_args(p, "staged", 64)
    cli.add_resource_args(p, "runs/staged_pretraining")
    p.add_argument("--smoke-test", action="store_true", help="smallest real sweep: basecnn, 32 px, 1 epoch, "
                   "small phantoms")
    args = cli.parse_study(p, argv, "staged_pretraining", PRESETS)
    from cxrray.tuning.staged import PATHS

    for name in args.paths:
        PATHS.get(name)
    if args.search:
        raise cli.UserError("--search is for hide_seek.py and source_bias.py; staged phases use their recipes")
    if args.smoke_test:
        args.backbones, args.phantom_patients = ["basecnn"], min(args.phantom_patients, 36)
        args.image_size = cli.smoke_size(args, argv)
        args.epochs = cli.smoke_epochs(args, argv)
    cli.check_names(backbone=args.backbones, task=[args.task], recipe=[args.recipe],
                representation=[args.representation])
    cli.check_image_size(args.image_size, args.backbones)
    return args


def _phantoms(run_dir: Path, keys: list[str], args: argparse.Namespace) -> dict[str, Path]:
    """Manifest per dataset key: given on the command line, or a phantom stand-in (made once)."""
    out, n = {}, args.phantom_patients
    makers = {"nih14": ({"patients": n}, lambda d: write_multilabel_phantom(d, n_patients=n)),
              "pneu_high": ({"patients": n}, lambda d: write_pneumonia_phantom(d, prevalence=0.24, n_patients=n,
                                                                               seed=200)),
              "pneu_low": ({"patients": 2 * n}, lambda d: write_pneumonia_phantom(d, prevalence=0.02, n_patients=2 * n,
                                                                                  seed=300)),
              "target": ({"patients": n, "confound": args.confound},
                         lambda d: write_phantom(d, n_patients=n, confound=args.confound, seed=0))}
    for key in keys:
        given = getattr(args, DATA_OPTIONS[key])
        out[key] = given or cli.generated(run_dir, key, *makers[key])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cxrray.analysis.summary import finish_study  # the stages (torch, Ray) load after --help is answered
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import run_waves, start_ray
    from cxrray.tuning.staged import PHASES, TARGET_FRACTIONS, datasets_needed, staged_specs

    cli.record_study(args, "staged_pretraining", argv)
    t0 = time.time()
    run_dir = args.out.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    manifests = _phantoms(run_dir, [*datasets_needed(args.paths), "target"], args)
    phase_of = {PHASES.get(p).dataset: PHASES.get(p) for p in PHASES.names()}
    for key, path in manifests.items():  # a missing class or too few patients fails here, before Ray starts
        cli.checked_manifest(path, phase_of[key].task if key in phase_of else args.task, seed=args.split_seed,
                             fractions=phase_of[key].fractions if key in phase_of else TARGET_FRACTIONS)
    start_ray(run_dir, num_cpus=args.num_cpus, wandb_mode=args.wandb, address=args.address,
              verbose_workers=args.verbose)
    data = {key: prepare_data(path, run_dir, image_size=args.image_size, split_seed=args.split_seed, name=key,
                              task=phase_of[key].task if key in phase_of else args.task,
                              fractions=phase_of[key].fractions if key in phase_of else TARGET_FRACTIONS,
                              check_masks=not args.masks_unchecked)
            for key, path in manifests.items()}
    recipes = {name: cli.recipe_from(args, PHASES.get(name).recipe if args.recipe == "staged" else args.recipe)
               for name in PHASES.names()}
    recipes["target"] = cli.recipe_from(args, "staged_phase3" if args.recipe == "staged" else args.recipe)
    waves = staged_specs(data_ids={k: d.data_id for k, d in data.items()}, paths=args.paths,
                         backbones=args.backbones, representation=args.representation, task=args.task,
                         seeds=args.seeds, image_size=args.image_size, pretrained=args.pretrained, recipes=recipes)
    outcome = run_waves(waves, run_dir=run_dir, data={d.data_id: d for d in data.values()},
                        **cli.sweep_options(args))
    return finish_study(run_dir, outcome, sum(map(len, waves)), t0, args.wandb, args.project)


if __name__ == "__main__":
    cli.run_cli(main, "staged_pretraining.py")
