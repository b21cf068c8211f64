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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cxrray.config import RunLayout
from cxrray.data.phantom import write_phantom
from cxrray.data.phantom_phases import write_multilabel_phantom, write_pneumonia_phantom
from cxrray.declared import option
from cxrray.tuning import cli
from cxrray.tuning.names import names
from cxrray.tuning.options import AXES, DATA, TRAIN, mask_unet_option, masks_unchecked_option, out_option

DATA_OPTIONS = {"nih14": "nih14", "pneu_high": "pneumonia_high", "pneu_low": "pneumonia_low", "target": "manifest"}


PRESETS: dict[str, dict[str, Any]] = {
    "demo": {"epochs": 4},  # phantom stand-ins, resnet18, 64 px; the recipes' other settings as published
    # Fricks et al.: DenseNet-121 from ImageNet, the staged recipes (up to 100 epochs, early stopping), 512 px.
    "paper": {"backbones": ["densenet121"], "pretrained": True, "image_size": 512, "seeds": [0, 1, 2, 3, 4]},
}


@dataclass(frozen=True)
class Staged(cli.Study):
    """The staged-pretraining study's options (``--help`` explains each)."""

    name = "staged_pretraining"
    presets = PRESETS
    axes = ("paths", "backbones", "seeds")
    smoke: ClassVar[Mapping[str, Any]] = {  # the smallest real sweep; what the user gave wins
        "backbones": ["basecnn"], "phantom_patients": 36, "image_size": 32,
        "epochs": 1}

    out: Path = out_option("runs/staged_pretraining")
    recipe: str = option("staged", "optimisation preset; the options below override it", group=TRAIN,
                         registry="recipe")
    nih14: Path | None = option(None, "phase-1 manifest with finding_<Name> columns (ChestX-ray14)", group=DATA,
                                default_text="a phantom stand-in")
    pneumonia_high: Path | None = option(None, "phase-2 manifest, high pneumonia prevalence (RSNA)", group=DATA,
                                         default_text="a phantom stand-in")
    pneumonia_low: Path | None = option(None, "phase-2 manifest, low pneumonia prevalence (NIH test set)",
                                        group=DATA, default_text="a phantom stand-in")
    manifest: Path | None = option(None, "phase-3 (target) manifest", group=DATA, default_text="a phantom")
    phantom_patients: int = option(120, "patients per phantom set", group=DATA, lo=6, hi=1_000_000,
                                   unit="patients")
    confound: float = option(0.5, "source confound of the target phantom", group=DATA, lo=0.0, hi=1.0,
                             unit="share")
    split_seed: int = option(0, "seed of the patient-level splits", group=DATA)
    masks_unchecked: bool = masks_unchecked_option()
    mask_unet: Path | None = mask_unet_option()
    paths: tuple[str, ...] = option(tuple(names("path")), "pretraining paths", group=AXES, registry="path")
    backbones: tuple[str, ...] = option(("resnet18",), "backbones (Fricks et al.: densenet121)", group=AXES,
                                        registry="backbone")
    representation: str = option("original", "input representation of every phase", group=AXES,
                                 registry="representation")
    seeds: tuple[int, ...] = option((0,), "seeds of the target phase", group=AXES)
    task: str = option("CL2", "target task", group=AXES, registry="task")
    smoke_test: bool = option(False, "smallest real sweep: basecnn, 32 px, 1 epoch, small phantoms (options "
                              "given on the command line or in --config win)")

    def check(self) -> None:
        super().check()
        from cxrray.tuning.staged import PATHS

        for name in self.paths:
            PATHS.get(name)
        if self.search:
            raise cli.UserError("--search is for hide_seek.py and source_bias.py; staged phases use their recipes")
        cli.check_names(backbone=self.backbones, task=[self.task], recipe=[self.recipe],
                        representation=[self.representation])
        cli.check_image_size(self.image_size, self.backbones)


def parse_args(argv: list[str] | None = None) -> Staged:
    return cli.parse_study(cli.study_parser(__doc__, Staged), argv, Staged)


def _phantoms(run_dir: Path, keys: list[str], study: Staged) -> dict[str, Path]:
    """Manifest per dataset key: given on the command line, or a phantom stand-in (made once)."""
    out, n = {}, study.phantom_patients
    Maker = tuple[dict[str, Any], Callable[[Path], Path]]  # (the parameters that key it, how it is made)
    makers: dict[str, Maker] = {"nih14": ({"patients": n}, lambda d: write_multilabel_phantom(d, n_patients=n)),
              "pneu_high": ({"patients": n}, lambda d: write_pneumonia_phantom(d, prevalence=0.24, n_patients=n,
                                                                               seed=200)),
              "pneu_low": ({"patients": 2 * n}, lambda d: write_pneumonia_phantom(d, prevalence=0.02, n_patients=2 * n,
                                                                                  seed=300)),
              "target": ({"patients": n, "confound": study.confound},
                         lambda d: write_phantom(d, n_patients=n, confound=study.confound, seed=0))}
    for key in keys:
        given = getattr(study, DATA_OPTIONS[key])
        out[key] = given or cli.generated(run_dir, key, *makers[key])
    return out


def main(argv: list[str] | None = None) -> int:
    study = parse_args(argv)
    from cxrray.studies.common import begin, start
    from cxrray.studies.finish import finish_study  # the stages (torch, Ray) load after --help is answered
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import run_waves
    from cxrray.tuning.staged import PHASES, TARGET_FRACTIONS, datasets_needed, staged_specs

    begun = begin(study, argv)
    run_dir = begun.run_dir
    manifests = _phantoms(run_dir, [*datasets_needed(study.paths), "target"], study)
    phase_of = {PHASES.get(p).dataset: PHASES.get(p) for p in PHASES.names()}
    task_of = {key: phase_of[key].task if key in phase_of else study.task for key in manifests}
    fractions_of = {key: phase_of[key].fractions if key in phase_of else TARGET_FRACTIONS for key in manifests}
    unet = None if study.masks_unchecked else study.mask_unet
    checked = {key: cli.checked_manifest(path, task_of[key], seed=study.split_seed, fractions=fractions_of[key],
                                         mask_unet=unet, masks_dir=RunLayout(run_dir).data("masks"))
               for key, path in manifests.items()}  # a missing class or too few patients fails here, before Ray
    start(study, begun)
    data = {key: prepare_data(path, run_dir, image_size=study.image_size, split_seed=study.split_seed, name=key,
                              task=task_of[key], fractions=fractions_of[key], frame=checked[key],
                              check_masks=not study.masks_unchecked)  # the frame checked, read once
            for key, path in manifests.items()}
    recipes = {name: study.train_recipe(PHASES.get(name).recipe if study.recipe == "staged" else study.recipe)
               for name in PHASES.names()}
    recipes["target"] = study.train_recipe("staged_phase3" if study.recipe == "staged" else study.recipe)
    waves = staged_specs(data_ids={k: d.data_id for k, d in data.items()}, paths=study.paths,
                         backbones=study.backbones, representation=study.representation, task=study.task,
                         seeds=study.seeds, image_size=study.image_size, pretrained=study.pretrained, recipes=recipes)
    outcome = run_waves(waves, run_dir=run_dir, data={d.data_id: d for d in data.values()},
                        options=study.sweep_options())
    return finish_study(run_dir, outcome, sum(map(len, waves)), begun.t0, study.wandb_mode, study.project,
                        begun.analysis)

