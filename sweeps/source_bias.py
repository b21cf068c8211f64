#!/usr/bin/env python
"""Source-bias sweep (Hasan et al. 2020): dataset design x task x backbone x seed/fold.

Designs (PROTOCOLS.md section 3): ``single`` (each class from one source),
``multiple`` (each class mixes sources), ``independent`` (test sources never
seen in training). The drop from Single/Multiple to Independent is the bias.
Tasks CL2 (NCV vs CVP), CL3 (NOR, NCP, CVP), CL4 (NOR, OBP, OVP, CVP).
Per-image predictions keep severity, for the per-severity accuracy of COVIDGR;
``--methods fucitnet`` adds COVID-SDNet's class-inherent transformations (FuCiTNet).

With no arguments it runs the CPU demo on the phantom with a partial source
confound (each class mostly, not only, from its own hospital).

    python sweeps/source_bias.py                                 # demo
    python sweeps/source_bias.py --smoke-test                    # smallest real sweep, CI
    python sweeps/source_bias.py --manifest covid/manifest.csv --preset paper --gpu
    python sweeps/source_bias.py --config my_study.yaml          # keys = these options
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cxrray.data.designs import DESIGNS
from cxrray.tuning import cli

PRESETS = {
    "demo": {"epochs": 4},
    # Hasan et al.: CVR-Net and comparators from ImageNet at 224 px, Adam + plateau + early stop,
    # frequency class weights; Single and Multiple by 5-fold cross-validation.
    "paper": {"backbones": ["cvrnet", "resnet50", "xception", "densenet121"], "tasks": ["CL2", "CL3", "CL4"],
              "recipe": "cvrnet", "image_size": 224, "pretrained": True, "folds": 5},
    # Haghanifar et al. (COVID-CXNet): the hierarchical model (normal vs pneumonia, then COVID-19 vs other
    # pneumonia) against the flat 3-class one, same network and recipe, in one table (rows single / CL3, CL3H).
    "covid_cxnet": {"designs": ["single"], "tasks": ["CL3", "CL3H"], "backbones": ["covid_cxnet"],
                    "recipe": "covid_cxnet", "image_size": 224, "pretrained": True},
    # Tabik et al. (COVID-SDNet): one source, segmentation crop, ResNet-50 + FC 512, SGD batch 16, 5 x 5-fold CV;
    # the baseline classifier ("standard") next to the full methodology ("fucitnet": class-inherent generators,
    # the 4-class P+/P-/N+/N- classifier and the fusion rule); accuracy per severity level in severity_accuracy.csv.
    "covid_sdnet": {"designs": ["single"], "tasks": ["CL2"], "backbones": ["covid_sdnet"], "recipe": "covid_sdnet",
                    "representation": "seg_crop", "image_size": 224, "pretrained": True, "folds": 5,
                    "seeds": [0, 1, 2, 3, 4], "methods": ["standard", "fucitnet"]},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--manifest", type=Path, help="manifest with several sources (default: the phantom)")
    d.add_argument("--phantom-patients", type=int, default=200, help="phantom size in patients (1-3 images each)")
    d.add_argument("--confound", type=float, default=0.7, help="phantom: probability of the class's home source")
    d.add_argument("--split-seed", type=int, default=0, help="seed of the patient-level splits and folds")
    cli.add_mask_arg(d)
    s = p.add_argument_group("sweep axes")
    s.add_argument("--designs", nargs="+", default=DESIGNS.names(), help="single, multiple, independent")
    s.add_argument("--tasks", nargs="+", default=["CL2"], help="CL2, CL3, CL4, CL3H (hierarchical CL3)")
    s.add_argument("--backbones", nargs="+", default=["basecnn", "resnet18"],
                   help=cli.valid_names("default: basecnn resnet18", "backbone"))
    s.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds: replicates of every cell")
    s.add_argument("--representation", default="original", help="input representation (seg_crop for COVID-SDNet)")
    s.add_argument("--methods", nargs="+", default=["standard"], help="training methods: standard, fucitnet "
                   "(COVID-SDNet's class-inherent transformations; single-label tasks, one worker per trial)")
    s.add_argument("--folds", type=int, default=1, help="k-fold CV for single/multiple (1: 60/20/20 holdout)")
    s.add_argument("--test-sources", nargs="+", default=[],
                   help="independent design: held-out sources (default: each viable source in turn)")
    cli.add_training_args(p, "demo", 64)
    cli.add_resource_args(p, "runs/source_bias")
    p.add_argument("--smoke-test", action="store_true", help="smallest real sweep: single + multiple, basecnn, "
                   "CL2, 32 px, 1 epoch")
    args = cli.parse_study(p, argv, "source_bias", PRESETS)
    if args.smoke_test:
        args.designs, args.tasks, args.backbones = ["single", "multiple"], ["CL2"], ["basecnn"]
        args.image_size, args.epochs = cli.smoke_size(args, argv), cli.smoke_epochs(args, argv)
        args.phantom_patients = min(args.phantom_patients, 60)
    for name in args.designs:
        DESIGNS.get(name)
    cli.check_names(backbone=args.backbones, task=args.tasks, recipe=[args.recipe],
                    representation=[args.representation], method=args.methods)
    cli.check_image_size(args.image_size, args.backbones)
    cli.check_method_resources(args.methods, args)  # each method's capabilities, before Ray starts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cxrray.analysis.summary import finish_study  # the stages (torch, Ray) load after --help is answered
    from cxrray.data.checks import check_task_data
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import run_sweep, start_ray
    from cxrray.tuning.study import design_splits, expand_search, parse_search, source_bias_specs

    cli.record_study(args, "source_bias", argv)
    t0 = time.time()
    run_dir = args.out.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = cli.phantom_or_manifest(run_dir, args.manifest, n_patients=args.phantom_patients,
                                       confound=args.confound, seed=1)
    rows, quarantine = cli.checked_manifest(manifest)  # a wrong column or leak fails here, before Ray starts
    frames = {(design, task, fold): df for design in args.designs for task in args.tasks
              for fold, df in design_splits(rows, design, task, folds=args.folds, seed=args.split_seed,
                                            test_sources=args.test_sources)}  # DesignError before Ray starts
    for (design, task, fold), df in frames.items():  # a class missing from a split fails here too
        check_task_data(df, task, f"{manifest} ({design} design, fold {fold})")
    start_ray(run_dir, num_cpus=args.num_cpus, wandb_mode=args.wandb, address=args.address,
              verbose_workers=args.verbose)
    data = {key: prepare_data(manifest, run_dir, image_size=args.image_size, task=key[1], name="-".join(map(str, key)),
                              frame=(df, quarantine), check_masks=not args.masks_unchecked)
            for key, df in frames.items()}
    specs = source_bias_specs(data_ids={k: d.data_id for k, d in data.items()}, backbones=args.backbones,
                              seeds=args.seeds, image_size=args.image_size, pretrained=args.pretrained,
                              recipe=cli.recipe_from(args), representation=args.representation, methods=args.methods)
    specs = expand_search(specs, parse_search(args.search))
    outcome = run_sweep(specs, run_dir=run_dir, data={d.data_id: d for d in data.values()},
                        **cli.sweep_options(args))
    return finish_study(run_dir, outcome, len(specs), t0, args.wandb, args.project)


if __name__ == "__main__":
    cli.run_cli(main, "source_bias.py")
