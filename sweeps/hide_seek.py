#!/usr/bin/env python
"""ROI hide-and-seek sweep (Sadre et al. 2021): representation x backbone x seed.

With no arguments it generates the embedded phantom dataset (source confound
on, as in COVIDx) and runs the CPU demo: 5 representations x 2 backbones
(resnet18, densenet121) x 1 seed at 64 px, 8 epochs each, every trial a fit
inside a Ray Tune sweep, ending with a table of test AUROC and 95 % DeLong CIs
and the shortcut verdicts. About 2.5 minutes on 2 CPU cores. Re-running with the same --out resumes:
finished trials are never rerun, new cells (more seeds, backbones) are added.

    python sweeps/hide_seek.py                       # demo on the phantom
    python sweeps/hide_seek.py --manifest my/manifest.csv --out runs/mine
    python sweeps/hide_seek.py --smoke-test          # smallest real sweep, CI
    python -m cxrray.analysis runs/hide_seek         # rerun the analysis only
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cxrray.data.phantom import SIGNATURE
from cxrray.tuning import cli
from cxrray.tuning.names import names

HIDE_SEEK_REPRESENTATIONS = names("hide_seek")  # Sadre et al.'s five, in protocol order (their registry entries)

PRESETS = {
    "demo": {},  # the defaults below: phantom, resnet18 + densenet121, 64 px, 8 epochs, CL2
    # Sadre et al.: CL3 on COVIDx, AlexNet / VGG-11 / ResNet-50 from ImageNet, 224 px, the study's recipe
    # (Adam 1e-4, batch 32, 20 epochs, class weights 1,1,4) with sampler-balanced batches.
    "paper": {"backbones": ["alexnet", "vgg11", "resnet50"], "task": "CL3", "recipe": "hide_seek",
              "image_size": 224, "pretrained": True, "balanced": True, "seeds": [0, 1, 2]},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--manifest", type=Path, help="manifest CSV/parquet (image_path, mask_path, patient_id, source, "
                   "label, severity, view, sex, age; paths relative to it). Default: generate the phantom")
    d.add_argument("--phantom-patients", type=int, default=160, help="phantom size in patients (1-3 images each)")
    d.add_argument("--phantom", choices=["covid", "pneumothorax"], default="covid", help="which phantom without "
                   "--manifest: covid (COVID-19 vs rest, a source confound) or pneumothorax (task "
                   "finding_Pneumothorax; positives may carry a chest drain outside the lungs, the device shortcut)")
    d.add_argument("--confound", type=float, default=1.0,
                   help="phantom shortcut strength: covid, the source confound (1 = each class from its own "
                        "hospital, 0 = independent); pneumothorax, the share of positives with a drain")
    d.add_argument("--signature", type=float, default=SIGNATURE,
                   help="phantom: strength of each hospital's global intensity style (gamma, noise, border) in "
                        "[0, 1]; its burn-in text and marker are always there, told apart only by place "
                        f"(default {SIGNATURE}: intensity statistics alone cannot tell the hospitals apart)")
    d.add_argument("--phantom-seed", type=int, default=0, help="seed of the phantom generator")
    d.add_argument("--split-seed", type=int, default=0, help="seed of the patient-level 60/20/20 split")
    cli.add_mask_arg(d)
    s = p.add_argument_group("sweep axes")
    s.add_argument("--representations", nargs="+",
                   help=cli.valid_names(f"default: the five of Sadre et al. ({', '.join(HIDE_SEEK_REPRESENTATIONS)})",
                                        "representation"))
    s.add_argument("--backbones", nargs="+", help=cli.valid_names(
        "default: resnet18 densenet121 (both learn the phantom in 8 CPU epochs; basecnn, the COVID-CXNet base "
        "CNN, often sits at chance there)", "backbone"))
    s.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds: replicates of every cell")
    s.add_argument("--task", help=cli.valid_names(
        "classification task (default CL2: COVID-19 (CVP) vs all other labels (NCV); finding_Pneumothorax for "
        "the pneumothorax phantom; finding_<Name> for any binary finding column of the manifest)", "task"))
    cli.add_training_args(p, "demo", 64)
    cli.add_resource_args(p, "runs/hide_seek")
    p.add_argument("--smoke-test", action="store_true",
                   help="smallest real sweep: 2 representations x basecnn, 1 epoch, 32 px, 36 phantom patients")
    args = cli.parse_study(p, argv, "hide_seek", PRESETS)
    if args.smoke_test:  # smallest real sweep; explicit axes still win
        args.representations = args.representations or ["original", "lungs_removed"]
        args.backbones = args.backbones or ["basecnn"]
        args.epochs, args.image_size = cli.smoke_epochs(args, argv), cli.smoke_size(args, argv)
        args.phantom_patients = min(args.phantom_patients, 36)
    args.representations = args.representations or list(HIDE_SEEK_REPRESENTATIONS)
    args.backbones = args.backbones or ["resnet18", "densenet121"]
    args.task = args.task or ("finding_Pneumothorax" if args.phantom == "pneumothorax" and not args.manifest
                              else "CL2")
    cli.check_names(representation=args.representations, backbone=args.backbones, task=[args.task],
                    recipe=[args.recipe])
    cli.check_image_size(args.image_size, args.backbones)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cxrray.analysis.summary import finish_study  # the stages (torch, Ray) load after --help is answered
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import run_sweep, start_ray
    from cxrray.tuning.study import expand_search, hide_seek_specs, parse_search

    cli.record_study(args, "hide_seek", argv)
    t0 = time.time()
    run_dir = args.out.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = cli.phantom_or_manifest(run_dir, args.manifest, n_patients=args.phantom_patients,
                                       confound=args.confound, seed=args.phantom_seed, signature=args.signature,
                                       kind=args.phantom)
    checked = cli.checked_manifest(manifest, args.task, seed=args.split_seed)  # bad input fails before Ray starts
    start_ray(run_dir, num_cpus=args.num_cpus, wandb_mode=args.wandb, address=args.address,
              verbose_workers=args.verbose)
    data = prepare_data(manifest, run_dir, image_size=args.image_size, task=args.task, split_seed=args.split_seed,
                        check_masks=not args.masks_unchecked, frame=checked)  # the frame checked, read once
    recipe = cli.recipe_from(args)
    specs = hide_seek_specs(data_id=data.data_id, representations=args.representations, backbones=args.backbones,
                            seeds=args.seeds, task=args.task, image_size=args.image_size,
                            pretrained=args.pretrained, recipe=recipe)
    specs = expand_search(specs, parse_search(args.search))
    outcome = run_sweep(specs, run_dir=run_dir, data=data, **cli.sweep_options(args))
    return finish_study(run_dir, outcome, len(specs), t0, args.wandb, args.project)


if __name__ == "__main__":
    cli.run_cli(main, "hide_seek.py")
