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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cxrray.config import RunLayout
from cxrray.data.designs import DESIGNS
from cxrray.declared import option
from cxrray.tuning import cli
from cxrray.tuning.options import AXES, DATA, mask_unet_option, masks_unchecked_option, out_option

PRESETS: dict[str, dict[str, Any]] = {
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


@dataclass(frozen=True)
class SourceBias(cli.Study):
    """The source-bias study's options (``--help`` explains each)."""

    name = "source_bias"
    presets = PRESETS
    axes = ("designs", "tasks", "backbones", "seeds", "methods")
    smoke: ClassVar[Mapping[str, Any]] = {  # the smallest real sweep; what the user gave wins
        "designs": ["single", "multiple"], "tasks": ["CL2"], "backbones": ["basecnn"], "image_size": 32,
        "epochs": 1, "phantom_patients": 60}

    out: Path = out_option("runs/source_bias")
    manifest: Path | None = option(None, "manifest with several sources", group=DATA, default_text="the phantom")
    phantom_patients: int = option(200, "phantom size in patients (1-3 images each)", group=DATA, lo=6,
                                   hi=1_000_000, unit="patients")
    confound: float = option(0.7, "phantom: probability of the class's home source", group=DATA, lo=0.0, hi=1.0,
                             unit="share")
    split_seed: int = option(0, "seed of the patient-level splits and folds", group=DATA)
    masks_unchecked: bool = masks_unchecked_option()
    mask_unet: Path | None = mask_unet_option()
    designs: tuple[str, ...] = option(tuple(DESIGNS.names()), "dataset designs", group=AXES, registry="design")
    tasks: tuple[str, ...] = option(("CL2",), "tasks (CL3H: hierarchical CL3)", group=AXES, registry="task")
    backbones: tuple[str, ...] = option(("basecnn", "resnet18"), "backbones", group=AXES, registry="backbone")
    seeds: tuple[int, ...] = option((0,), "training seeds: replicates of every cell", group=AXES)
    representation: str = option("original", "input representation (seg_crop for COVID-SDNet)", group=AXES,
                                 registry="representation")
    methods: tuple[str, ...] = option(("standard",), "training methods: standard, fucitnet (COVID-SDNet's "
                                      "class-inherent transformations; single-label tasks, one worker per trial)",
                                      group=AXES)
    folds: int = option(1, "k-fold CV for single/multiple (1: 60/20/20 holdout)", group=AXES, lo=1, hi=100,
                        unit="folds")
    test_sources: tuple[str, ...] = option((), "independent design: held-out sources", group=AXES,
                                           default_text="each viable source in turn")
    smoke_test: bool = option(False, "smallest real sweep: single + multiple, basecnn, CL2, 32 px, 1 epoch "
                              "(options given on the command line or in --config win)")

    def check(self) -> None:
        super().check()
        for name in self.designs:
            DESIGNS.get(name)
        cli.check_names(backbone=self.backbones, task=self.tasks, recipe=[self.recipe],
                        representation=[self.representation], method=self.methods)
        cli.check_image_size(self.image_size, self.backbones)
        cli.check_method_resources(self.methods, self)  # each method's capabilities, before Ray starts


def parse_args(argv: list[str] | None = None) -> SourceBias:
    return cli.parse_study(cli.study_parser(__doc__, SourceBias), argv, SourceBias)


def main(argv: list[str] | None = None) -> int:
    study = parse_args(argv)
    from cxrray.data.checks import check_task_data
    from cxrray.studies.common import begin, start
    from cxrray.studies.finish import finish_study  # the stages (torch, Ray) load after --help is answered
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import run_sweep
    from cxrray.tuning.study import check_methods_on_data, design_splits, expand_search, parse_search, source_bias_specs

    begun = begin(study, argv)
    run_dir = begun.run_dir
    manifest = cli.phantom_or_manifest(run_dir, study.manifest, n_patients=study.phantom_patients,
                                       confound=study.confound, seed=1)
    rows, quarantine = cli.checked_manifest(  # a wrong column or leak fails here, before Ray starts
        manifest, mask_unet=None if study.masks_unchecked else study.mask_unet,
        masks_dir=RunLayout(run_dir).data("masks"))
    check_methods_on_data(study.methods, rows, manifest)  # a method the data cannot estimate: one line, before Ray
    frames = {(design, task, fold): df for design in study.designs for task in study.tasks
              for fold, df in design_splits(rows, design, task, folds=study.folds, seed=study.split_seed,
                                            test_sources=study.test_sources)}  # DesignError before Ray starts
    for (design, task, fold), df in frames.items():  # a class missing from a split fails here too
        check_task_data(df, task, f"{manifest} ({design} design, fold {fold})")
    start(study, begun)
    data = {key: prepare_data(manifest, run_dir, image_size=study.image_size, task=key[1], name="-".join(map(str, key)),
                              frame=(df, quarantine), check_masks=not study.masks_unchecked)
            for key, df in frames.items()}
    specs = source_bias_specs(data_ids={k: d.data_id for k, d in data.items()}, backbones=study.backbones,
                              seeds=study.seeds, image_size=study.image_size, pretrained=study.pretrained,
                              recipe=study.train_recipe(), representation=study.representation, methods=study.methods)
    specs = expand_search(specs, parse_search(study.search))
    outcome = run_sweep(specs, run_dir=run_dir, data={d.data_id: d for d in data.values()},
                        options=study.sweep_options())
    return finish_study(run_dir, outcome, len(specs), begun.t0, study.wandb_mode, study.project, begun.analysis)

