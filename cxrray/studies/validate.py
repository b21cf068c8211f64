"""Known-answer validation of the hide-and-seek protocol on the phantom.

The same sweep on phantoms that differ only in the source confound (0, 0.5, 1
by default), then the checks of ``cxrray.analysis.validation``: with the
confound on the shortcut is flagged (the Grad-CAM share inside the lungs is reported); with it off
the lung-hiding representations are at chance while ``lungs_isolated`` keeps
the signal; the shortcut signal grows with the confound. With several
``--phantom-seeds`` it also measures the verdict's operating characteristics:
the false-flag rate at confound 0 and the detection rate where the confound is
planted, with their spread over the seeds. Exit 1 when a check fails. Results:
``<out>/confound-<c>/`` (``<out>/seed-<s>/confound-<c>/`` for several seeds;
each a full run with its analysis) and ``<out>/validation.md``.

    python sweeps/validate.py                    # CI size, a few minutes on 2 CPUs
    python sweeps/validate.py --phantom-seeds 0 1 2 3 4   # operating characteristics, ~12 min on 2 CPUs
    python sweeps/validate.py --preset cluster --gpu --max-concurrent 8   # larger, on a GPU cluster
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrray.declared import option
from cxrray.tuning import cli
from cxrray.tuning.options import ANALYSIS, AXES, DATA, TRAIN, out_option

REPRESENTATIONS = ("original", "lungs_isolated", "lungs_removed", "lungs_boxed_out")
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {},  # the defaults below: 160 patients, resnet18, 64 px, 8 epochs, 1 seed (~4 min on 2 CPUs)
    "cluster": {"phantom_patients": 1000, "backbones": ["basecnn", "resnet18", "densenet121"], "image_size": 128,
                "epochs": 20, "seeds": [0, 1, 2], "confounds": [0.0, 0.25, 0.5, 0.75, 1.0]},
}


@dataclass(frozen=True)
class Validate(cli.Study):
    """The known-answer validation's options (``--help`` explains each)."""

    name = "validate"
    presets = PRESETS
    axes = ("confounds", "phantom_seeds", "backbones", "seeds")

    out: Path = out_option("runs/validate")
    epochs: int | None = option(8, "training epochs per trial", group=TRAIN, lo=1, hi=100_000, unit="epochs")
    confounds: tuple[float, ...] = option((0.0, 0.5, 1.0), "phantom source confounds (0 and 1 are required: they "
                                          "carry the known answers)", group=AXES, lo=0.0, hi=1.0, unit="share")
    phantom_patients: int = option(160, "phantom size in patients (1-3 images each)", group=DATA, lo=6,
                                   hi=1_000_000, unit="patients")
    phantom_seed: int = option(0, "seed of the phantom generator", group=DATA)
    phantom_seeds: tuple[int, ...] = option((), "several phantom seeds: the known answers on each, and the "
                                            "verdict's false-flag and detection rates over them", group=AXES)
    backbones: tuple[str, ...] = option(("resnet18",), "backbones of the sweep (basecnn does not find the "
                                        "phantom's stamps in 8 epochs)", group=AXES, registry="backbone")
    seeds: tuple[int, ...] = option((0,), "training seeds: replicates of every cell", group=AXES)
    saliency: int = option(32, "test images per trial for Grad-CAM", group=ANALYSIS, lo=0, hi=100_000,
                           unit="images")

    def check(self) -> None:
        super().check()
        if 0.0 not in self.confounds or 1.0 not in self.confounds:
            raise cli.UserError(f"--confounds must include 0 and 1 (the known answers), got {list(self.confounds)}")
        cli.check_names(backbone=self.backbones, recipe=[self.recipe])
        cli.check_image_size(self.image_size, self.backbones)


def parse_args(argv: list[str] | None = None) -> Validate:
    return cli.parse_study(cli.study_parser(__doc__, Validate), argv, Validate)


def main(argv: list[str] | None = None) -> int:
    study = parse_args(argv)
    import polars as pl

    from cxrray.analysis.analyze import run_analysis  # torch and Ray load after --help is answered
    from cxrray.analysis.aurocs import format_table
    from cxrray.analysis.steps import AnalysisOptions, analysis_options
    from cxrray.analysis.validation import format_checks, known_answer_checks, operating_characteristics
    from cxrray.studies.common import begin, start
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import run_sweep
    from cxrray.tuning.study import hide_seek_specs

    begun = begin(study, argv)
    t0, out = begun.t0, begun.run_dir
    start(study, begun)
    seeds = study.phantom_seeds or [study.phantom_seed]
    runs: dict[int, dict[float, Path]] = {}
    for phantom_seed in seeds:
        base = out if len(seeds) == 1 else out / f"seed-{phantom_seed}"
        runs[phantom_seed] = {}
        for c in sorted(study.confounds):
            run_dir = base / f"confound-{c:g}"
            # the same patients and images; only which hospital a class comes from differs
            manifest = cli.phantom_or_manifest(run_dir, None, n_patients=study.phantom_patients, confound=c,
                                               seed=phantom_seed)
            data = prepare_data(manifest, run_dir, image_size=study.image_size, task="CL2",
                                frame=cli.checked_manifest(manifest, "CL2"))
            specs = hide_seek_specs(data_id=data.data_id, representations=REPRESENTATIONS, backbones=study.backbones,
                                    seeds=study.seeds, image_size=study.image_size, recipe=study.train_recipe(),
                                    study=f"validate-confound-{c:g}")
            print(f"[cxrray] phantom seed {phantom_seed}, confound {c:g}: {len(specs)} trials", flush=True)
            outcome = run_sweep(specs, run_dir=run_dir, data=data, options=study.sweep_options())
            if outcome.failed:
                print(f"[cxrray] confound {c:g}: {len(outcome.failed)} trial(s) failed; see {run_dir}", flush=True)
                return 1
            run_analysis(run_dir, analysis_options(study.analysis, AnalysisOptions(skip=study.skip,
                                                                                   saliency=study.saliency)))
            runs[phantom_seed][c] = run_dir
    parts, ok = ["# Known-answer validation"], True
    for phantom_seed, by_confound in runs.items():
        checks, table = known_answer_checks(by_confound)
        ok &= all(c.passed for c in checks if c.required)
        rounded = table.with_columns(table["hidden_mean_auroc"].round(3),
                                     table["saliency_in_lungs_original"].round(3))
        md = format_table(rounded, f"Test AUROC [95 % interval] per confound (phantom seed {phantom_seed}, backbones "
                                   f"{', '.join(study.backbones)}, seeds {list(study.seeds)}):")
        parts.append(f"{md}\n\n```\n{format_checks(checks)}\n```")
        table.write_csv(Path(by_confound[min(by_confound)]).parent / "validation.csv")
    oc = operating_characteristics(runs)
    rates = oc.with_columns(*(pl.col(c).round(3) for c in ("flag_rate", "rate_min", "rate_max")))
    parts.append(format_table(rates, f"Operating characteristics of the shortcut verdict over {len(seeds)} phantom "
                                     f"seed(s): flag rate = shortcut verdicts / lung-hiding trials (false flags at "
                                     f"confound 0, detections where it is planted), spread = lowest and highest "
                                     f"per-seed rate"))
    oc.write_csv(out / "operating_characteristics.csv")
    (out / "validation.md").write_text("\n\n".join(parts) + "\n")
    print("\n" + "\n\n".join(parts[1:]))
    print(f"\n[cxrray] validation {'passed' if ok else 'FAILED'} in {time.time() - t0:.0f} s; {out / 'validation.md'}")
    return 0 if ok else 1
