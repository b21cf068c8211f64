"""``cxrray audit``: a trained classifier cxrray did not train, scored on every hide-and-seek representation of
a test set, with the verdicts that apply to a model trained on whole images (issue 40). No training.

    cxrray audit --manifest test/manifest.csv --positive CVP --model-spec model.json --out runs/audit
    cxrray audit --manifest m.csv --positive 1 --form state_dict --path w.pt --arch densenet121 \\
        --channels 3 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --output sigmoid --outputs 1 \\
        --positive-index 0

Every image of the manifest is a test image (patients as the unit); rows need lung masks (``mask_path``), or
``--mask-unet`` fills the missing ones. The model is described by a spec (``models.external.ModelSpec``: a JSON
file, or the flags of its section), checked by a dry run on one image before anything is scored. The run folder
holds the shards, ``analysis/audit_predictions.parquet`` (one row per image and representation: its positive
probability), ``analysis/audit.csv`` (per representation: AUROC with the patient-clustered interval and what it
says), ``analysis/audit.png`` and ``report.html`` (the answer first); with ``--saliency N`` (32) Grad-CAM in the
lungs on N test images, with ``--sources`` the source-only ceiling and a source probe on the model's features.

    cxrray audit reanalyse runs/audit       # the table, verdicts and report again from the stored predictions
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrray.declared import OneLineParser, add_arguments, check_ranges, from_arguments, option
from cxrray.registry import UserError

if TYPE_CHECKING:  # (torch, polars and the stages load when the audit runs: --help answers at once)
    import numpy as np
    import polars as pl

    from cxrray.config import RunLayout
    from cxrray.models.external import ModelSpec
    from cxrray.verdicts.audit import AuditRow
    from cxrray.verdicts.verdict import Headline

AUDIT = "the audit"
RUN_FILE = "audit_run.json"  # what a rerun from the predictions needs: the positive label, the spec, the sentences


@dataclass(frozen=True)
class AuditOptions:
    """What ``cxrray audit`` is asked, besides the model's spec."""

    manifest: Path = option(dataclasses.MISSING, "manifest.csv of the test images (image_path, patient_id, label, "
                            "mask_path ...)", group=AUDIT)
    positive: str = option(dataclasses.MISSING, "the label value of the positive class (e.g. CVP, 1)", group=AUDIT)
    out: Path = option(Path("runs/audit"), "the run folder", group=AUDIT)
    model_spec: Path | None = option(None, "a JSON file of the model's spec (else its flags below)", group=AUDIT)
    store_size: int = option(224, "pixels the test images are stored at (the model's input size is its spec's)",
                             lo=16, hi=4096, unit="px", group=AUDIT)
    mask_unet: Path | None = option(None, "a lung U-Net (unet.pt): every row without a mask gets its lungs",
                                    group=AUDIT)
    saliency: int = option(32, "test images (half of each class) for Grad-CAM inside the lungs with the "
                           "randomisation check (0: none)", lo=0, hi=100_000, unit="images", group=AUDIT)
    sources: bool = option(False, "the source-only ceiling and a source probe on the model's penultimate features "
                           "(needs 2+ values in the manifest's source column)", group=AUDIT)
    gpu: bool = option(False, "score on the GPU (CUDA)", group=AUDIT)

    def __post_init__(self) -> None:
        check_ranges(self)

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"


def _test_manifest(options: AuditOptions) -> pl.DataFrame:
    """The manifest with every row in the test split (masks filled by the U-Net first where asked)."""
    import polars as pl

    from cxrray.data.manifest import load_manifest

    path = options.manifest
    if options.mask_unet is not None:
        from cxrray.segmentation.job import fill_masks

        path = fill_masks(path, options.mask_unet, options.out / "data")
    return load_manifest(path).with_columns(pl.lit("test").alias("split"))


def run_audit(options: AuditOptions, spec: ModelSpec) -> Headline:
    """Ingest, dry run, score every representation, judge, write the run folder; the headline."""
    import numpy as np
    import polars as pl
    import torch

    from cxrray.config import RunLayout
    from cxrray.data.shards import LocalSplit
    from cxrray.data.store import ShardStore
    from cxrray.explain.audit_evidence import audit_saliency, audit_sources
    from cxrray.explain.external import score_external
    from cxrray.models.external import dry_run, load_external
    from cxrray.representations import InputPipeline
    from cxrray.studies.audit_report import write_report
    from cxrray.tuning.runner import start_ray

    model = load_external(spec)  # one line for an unreadable file, before any image is read
    if options.gpu and not torch.cuda.is_available():
        raise UserError("--gpu: no CUDA device is visible here")
    layout = RunLayout(options.out.resolve())
    Path(layout.analysis).mkdir(parents=True, exist_ok=True)
    manifest = _test_manifest(options)
    start_ray(layout.root, wandb_mode="disabled")
    shards = ShardStore(layout).get_or_ingest(manifest, options.store_size, source=str(options.manifest))
    if shards.bad_rows.height:
        shards.bad_rows.write_csv(layout.quarantine("audit"))
        print(f"[cxrray] {shards.bad_rows.height} row(s) left out (file, row and reason: "
              f"{layout.quarantine('audit')})")
    split = shards.dir / "test"
    first = next(LocalSplit(str(split), stored_pixels=True).iter_batches(batch_size=1), None)
    if first is None:
        raise UserError(f"{options.manifest}: no readable test image")
    image, _ = InputPipeline.tensors(first, torch.device("cpu"))
    dry_run(model, image)
    scores = score_external(model, split, device=options.device, features=options.sources)
    if options.positive not in set(scores.labels.tolist()):
        raise UserError(f"--positive {options.positive!r} is not a label of {options.manifest} (labels: "
                        f"{sorted(set(scores.labels.tolist()))})")
    y = scores.labels == options.positive
    pl.concat([pl.DataFrame({"row": scores.rows, "patient_id": scores.patients, "label": scores.labels,
                             "representation": rep, "prob_positive": probs})
               for rep, probs in scores.probs.items()]).write_parquet(layout.analysis_file("audit_predictions.parquet"))
    rows, headline = _judge(layout, y, scores.patients, scores.probs)
    saliency = (audit_saliency(model, split, options.positive, options.saliency, device=options.device)
                if options.saliency else None)
    if saliency is not None and saliency.rows.height:
        saliency.rows.write_csv(layout.analysis_file("audit_saliency.csv"))
    sources = audit_sources(model, scores, options.positive, rows[0].level if rows else 0.95) if options.sources \
        else None
    if sources is not None and sources.height:
        sources.write_csv(layout.analysis_file("audit_sources.csv"))
    write_report(layout, spec, rows, headline, int(np.unique(scores.patients).size), saliency, sources)
    Path(layout.analysis_file(RUN_FILE)).write_text(json.dumps(
        {"positive": options.positive, "manifest": str(options.manifest), "spec": dataclasses.asdict(spec),
         "saliency": saliency.says if saliency is not None else ""}, indent=1))
    return headline


def _judge(layout: RunLayout, y: np.ndarray, patients: np.ndarray, probs: dict[str, np.ndarray]
           ) -> tuple[list[AuditRow], Headline]:
    """The audit's table (``analysis/audit.csv``) and headline from the per-image probabilities."""
    import polars as pl

    from cxrray.representations import lung_hiding
    from cxrray.verdicts.audit import audit_headline, audit_rows

    rows = audit_rows(y, patients, probs, lung_hiding())
    pl.DataFrame([r.row() for r in rows]).write_csv(layout.analysis_file("audit.csv"))
    return rows, audit_headline(rows, lung_hiding())


def reanalyse(out: Path) -> Headline:
    """The table, headline and report again from ``analysis/audit_predictions.parquet`` alone (no model, no
    image): every number of the audit reruns from the stored per-image predictions."""
    import numpy as np
    import polars as pl

    from cxrray.config import RunLayout
    from cxrray.explain.audit_evidence import AuditSaliency
    from cxrray.models.external import ModelSpec
    from cxrray.studies.audit_report import write_report

    layout = RunLayout(Path(out).resolve())
    run, predictions = Path(layout.analysis_file(RUN_FILE)), Path(layout.analysis_file("audit_predictions.parquet"))
    if not run.exists() or not predictions.exists():
        raise UserError(f"{layout.root}: not an audit run folder (no analysis/{RUN_FILE} and "
                        f"analysis/audit_predictions.parquet)")
    meta = json.loads(run.read_text())
    stored = pl.read_parquet(predictions)
    order = stored["representation"].unique(maintain_order=True).to_list()
    frame = stored.sort("representation", "row")
    first = frame.filter(pl.col("representation") == order[0])
    y = first["label"].cast(pl.Utf8).to_numpy() == meta["positive"]
    patients = first["patient_id"].cast(pl.Utf8).to_numpy()
    probs = {r: frame.filter(pl.col("representation") == r)["prob_positive"].to_numpy() for r in order}
    rows, headline = _judge(layout, y, patients, probs)
    spec_fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["spec"].items()}
    sources_file = Path(layout.analysis_file("audit_sources.csv"))
    sources = pl.read_csv(sources_file) if sources_file.exists() else None
    said = AuditSaliency(pl.DataFrame(), "", meta["saliency"] or "not computed", {})  # the maps need the model
    write_report(layout, ModelSpec(**spec_fields), rows, headline, int(np.unique(patients).size), said, sources)
    return headline


def main(argv: list[str] | None = None) -> int:
    from cxrray.models.external import ModelSpec

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reanalyse"]:  # cxrray audit reanalyse RUN: from the stored predictions alone
        try:
            headline = reanalyse(Path(argv[1]) if len(argv) > 1 else Path("runs/audit"))
        except UserError as exc:
            print(f"cxrray audit reanalyse: error: {exc}", file=sys.stderr)
            return 2
        print(f"[cxrray] {headline.text}")
        return 0
    p = OneLineParser(prog="cxrray audit", description=__doc__, formatter_class=__import__("argparse").
                      RawDescriptionHelpFormatter)
    groups: dict[str, Any] = {}
    add_arguments(p, AuditOptions, defaults=True, groups=groups)
    add_arguments(p, ModelSpec, defaults=True, groups=groups)
    given = vars(p.parse_args(argv))
    try:
        options = AuditOptions(**from_arguments(AuditOptions, given))
        spec = (ModelSpec.from_json(options.model_spec) if options.model_spec is not None
                else ModelSpec(**from_arguments(ModelSpec, given)))
        headline = run_audit(options, spec)
    except UserError as exc:
        print(f"cxrray audit: error: {exc}", file=sys.stderr)
        return 2
    from cxrray.config import RunLayout

    print(f"[cxrray] {headline.text}; report: {RunLayout(options.out.resolve()).report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
