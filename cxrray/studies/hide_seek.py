"""ROI hide-and-seek sweep (Sadre et al. 2021): representation x backbone x seed.

With no arguments it generates the embedded phantom dataset (source confound
on, as in COVIDx) and runs the CPU demo: 5 representations x 2 backbones
(resnet18, densenet121) x 1 seed at 64 px, 8 epochs each, every trial a fit
inside a Ray Tune sweep, ending with a table of test AUROC and 95 % DeLong CIs
and the shortcut verdicts. About 4-7 minutes on 2 CPU cores. Re-running with the same --out resumes:
finished trials are never rerun, new cells (more seeds, backbones) are added.

    python sweeps/hide_seek.py                       # demo on the phantom
    python sweeps/hide_seek.py --manifest my/manifest.csv --out runs/mine
    python sweeps/hide_seek.py --smoke-test          # smallest real sweep, CI
    python -m cxrray.analysis runs/hide_seek         # rerun the analysis only
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from cxrray.config import RunLayout
from cxrray.data.phantom import SIGNATURE
from cxrray.declared import option
from cxrray.tuning import cli
from cxrray.tuning.names import names
from cxrray.tuning.options import AXES, DATA, mask_unet_option, masks_unchecked_option, out_option

HIDE_SEEK_REPRESENTATIONS = tuple(names("hide_seek"))  # Sadre et al.'s five, in protocol order (their registry entries)

PRESETS = {
    "demo": {},  # the defaults below: phantom, resnet18 + densenet121, 64 px, 8 epochs, CL2
    # Sadre et al.: CL3 on COVIDx, AlexNet / VGG-11 / ResNet-50 from ImageNet, 224 px, the study's recipe
    # (Adam 1e-4, batch 32, 20 epochs, class weights 1,1,4) with sampler-balanced batches.
    "paper": {"backbones": ["alexnet", "vgg11", "resnet50"], "task": "CL3", "recipe": "hide_seek",
              "image_size": 224, "pretrained": True, "balanced": True, "seeds": [0, 1, 2]},
}


@dataclass(frozen=True)
class HideSeek(cli.Study):
    """The hide-and-seek study's options (``--help`` explains each; ``task`` None: CL2, or finding_Pneumothorax
    on the pneumothorax phantom)."""

    name = "hide_seek"
    presets = PRESETS
    axes = ("representations", "backbones", "seeds", "mask_dilation", "methods")
    smoke: ClassVar[Mapping[str, Any]] = {  # the smallest real sweep; what the user gave wins
        "representations": ["original", "lungs_removed"], "backbones": ["basecnn"], "epochs": 1,
        "image_size": 32, "phantom_patients": 36}

    out: Path = out_option("runs/hide_seek")
    manifest: Path | None = option(None, "manifest CSV/parquet (image_path, mask_path, patient_id, source, label, "
                                   "severity, view, sex, age; paths relative to it)", group=DATA,
                                   default_text="generate the phantom")
    phantom_patients: int = option(160, "phantom size in patients (1-3 images each)", group=DATA, lo=6,
                                   hi=1_000_000, unit="patients")
    phantom: Literal["covid", "pneumothorax", "border"] = option(
        "covid", "which phantom without --manifest: covid (COVID-19 vs rest, a source confound), pneumothorax "
        "(task finding_Pneumothorax; positives may carry a chest drain outside the lungs, the device shortcut) or "
        "border (COVID-19 drawn only in a band just inside the lung border, which the masks miss: the known "
        "answer of --mask-dilation)", group=DATA)
    confound: float = option(1.0, "phantom shortcut strength: covid, the source confound (1 = each class from its "
                             "own hospital; 0 = independent); pneumothorax, the share of positives with a drain",
                             group=DATA, lo=0.0, hi=1.0, unit="share")
    signature: float = option(SIGNATURE, "phantom: strength of each hospital's global intensity style (gamma, "
                              "noise, border) in [0, 1]; its burn-in text and marker are always there, told apart "
                              "only by place (at the default, intensity statistics alone cannot tell the "
                              "hospitals apart)", group=DATA, lo=0.0, hi=1.0, unit="strength")
    phantom_seed: int = option(0, "seed of the phantom generator", group=DATA)
    split_seed: int = option(0, "seed of the patient-level 60/20/20 split", group=DATA)
    masks_unchecked: bool = masks_unchecked_option()
    mask_unet: Path | None = mask_unet_option()
    representations: tuple[str, ...] = option(HIDE_SEEK_REPRESENTATIONS, "input representations (the default: "
                                              "the five of Sadre et al.)", group=AXES, registry="representation")
    backbones: tuple[str, ...] = option(("resnet18", "densenet121"), "backbones (the default pair learns the "
                                        "phantom in 8 CPU epochs; basecnn, the COVID-CXNet base CNN, often sits at "
                                        "chance there; your own network: "
                                        "file:module.py:build)", group=AXES, registry="backbone")
    seeds: tuple[int, ...] = option((0,), "training seeds: replicates of every cell", group=AXES)
    mask_dilation: tuple[int, ...] = option((0,), "mask-dilation sensitivity: rerun the lung-hiding "
                                            "representations with the lung mask grown by each PX pixels at the "
                                            "model's resolution (e.g. 0 4 8); the report shows whether each "
                                            "verdict survives (0: none)", group=AXES, metavar="PX")
    methods: tuple[str, ...] = option(("standard",), "training methods: short_sex or short_age_band runs "
                                      "shortcut testing (ShorT: an attribute head whose gradient into the "
                                      "backbone is scaled by -1, -0.5, 0, 0.5, 1; one trial each; give it 3-4 "
                                      "--seeds: 10 models found a planted phantom shortcut half the time, 20 every "
                                      "time), short_sex_0.5 one factor; fucitnet", group=AXES)
    task: str | None = option(None, "classification task (CL2: COVID-19 (CVP) vs all other labels (NCV); "
                              "finding_Pneumothorax for the pneumothorax phantom; finding_<Name> for any binary "
                              "finding column of the manifest)", group=AXES, registry="task",
                              default_text="CL2, or finding_Pneumothorax on the pneumothorax phantom")
    smoke_test: bool = option(False, "smallest real sweep: 2 representations x basecnn, 1 epoch, 32 px, 36 "
                              "phantom patients (options given on the command line or in --config win)")

    def derive(self) -> HideSeek:
        pneumothorax = self.phantom == "pneumothorax" and not self.manifest
        return replace(self, task=self.task or ("finding_Pneumothorax" if pneumothorax else "CL2"))

    def check(self) -> None:
        super().check()
        cli.check_names(representation=self.representations, backbone=self.backbones, task=[self.task or ""],
                        recipe=[self.recipe])
        cli.check_image_size(self.image_size, self.backbones)
        from cxrray.tuning.study import check_mask_dilation, method_names  # (torch: after --help is answered)

        check_mask_dilation(self.mask_dilation, self.representations, self.image_size)
        method_names(self.methods)


def parse_args(argv: list[str] | None = None) -> HideSeek:
    return cli.parse_study(cli.study_parser(__doc__, HideSeek), argv, HideSeek)


def main(argv: list[str] | None = None) -> int:
    study = parse_args(argv)
    from cxrray.studies.common import begin, start
    from cxrray.studies.finish import finish_study  # the stages (torch, Ray) load after --help is answered
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import run_sweep
    from cxrray.tuning.study import check_methods_on_data, expand_search, hide_seek_specs, parse_search

    begun = begin(study, argv)
    run_dir = begun.run_dir
    manifest = cli.phantom_or_manifest(run_dir, study.manifest, n_patients=study.phantom_patients,
                                       confound=study.confound, seed=study.phantom_seed, signature=study.signature,
                                       kind=study.phantom)
    checked = cli.checked_manifest(manifest, study.task, seed=study.split_seed,  # bad input fails before Ray starts
                                   mask_unet=None if study.masks_unchecked else study.mask_unet,
                                   masks_dir=RunLayout(run_dir).data("masks"))
    check_methods_on_data(study.methods, checked[0], manifest)  # ShorT on one sex: one line, before Ray
    start(study, begun)
    task = study.task
    assert task is not None, "derive() chose the task"
    data = prepare_data(manifest, run_dir, image_size=study.image_size, task=task, split_seed=study.split_seed,
                        check_masks=not study.masks_unchecked, frame=checked)  # the frame checked, read once
    recipe = study.train_recipe()
    specs = hide_seek_specs(data_id=data.data_id, representations=study.representations, backbones=study.backbones,
                            seeds=study.seeds, task=task, image_size=study.image_size,
                            pretrained=study.pretrained, recipe=recipe, mask_dilation=study.mask_dilation,
                            methods=study.methods)
    specs = expand_search(specs, parse_search(study.search))
    outcome = run_sweep(specs, run_dir=run_dir, data=data, options=study.sweep_options())
    return finish_study(run_dir, outcome, len(specs), begun.t0, study.wandb_mode, study.project, begun.analysis)

