"""A reporting-guideline section: CLAIM 2024 and TRIPOD+AI items, each with where this run answers it.

The items least reported in published CXR work are sample size, robustness, failure analysis, annotation quality
control and code availability; a run of cxrray knows most of them. Every item is one row: the guideline and the
item's number (CLAIM 2024, Tejani et al., Radiology: AI 2024, 42 items; TRIPOD+AI, Collins et al., BMJ 2024,
27 items), its topic in short, a status and the answer filled from the run (data, splits, exclusions, masks,
recipe, statistics, the analysis files written before this step, code version). An item the run cannot know
(the clinical question, ethics, funding, ...) is answered by "authors"; one the run answers in part by "run +
authors". The topics are paraphrased:
check the official checklists before a submission. Step ``checklist`` (runs last); ``analysis/checklist.csv``
and ``analysis/checklist.md`` (the table to attach to a submission).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import yaml

from cxrray import provenance
from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.data.tasks import TASKS
from cxrray.report.page import Artifacts, Section
from cxrray.scalars import num

# status: the run answers the item; it answers part and the authors complete it; only the authors can write it
RUN, PART, AUTHORS = "run", "run + authors", "authors"
SPLIT_ORDER = pl.col("split").replace_strict({"train": 0, "val": 1, "test": 2}, default=3, return_dtype=pl.Int64)


@dataclass(frozen=True)
class Facts:
    """What the run knows, read once for every item."""

    run: LoadedRun
    study: dict  # the effective study (study.yaml)
    invocations: list[dict]  # provenance.json
    splits: pl.DataFrame  # splits.csv: manifest row, patient, label, source (sex, age, view), split
    quarantine: pl.DataFrame  # quarantine.csv: every row left out, with why
    written: frozenset[str]  # analysis files the earlier steps wrote (``subgroups.csv``, ...)

    def has(self, name: str) -> bool:
        return name in self.written

    def table(self, name: str) -> pl.DataFrame:
        """An analysis table an earlier step wrote (empty when it did not)."""
        path = self.run.layout.analysis_file(name)
        return pl.read_csv(path, infer_schema_length=None) if self.has(name) and path.is_file() else pl.DataFrame()

    def column(self, name: str) -> list:
        return sorted({str(v) for v in self.run.results[name].to_list()}) if name in self.run.results.columns else []


Answer = Callable[[Facts], tuple[str, str]]  # -> (status, answer)


def _data_sources(f: Facts) -> tuple[str, str]:
    where = f.study.get("manifest") or f"the embedded {f.study.get('phantom', 'covid')} phantom"
    counts = f.splits.group_by("source").agg(pl.len().alias("images"), pl.col("patient_id").n_unique()
                                             .alias("patients")).sort("source") if f.splits.height else pl.DataFrame()
    per = "; ".join(f"{r['source']} {r['patients']} patients / {r['images']} images" for r in counts.iter_rows(
        named=True))
    ids = ", ".join(f.column("data_id"))
    return PART, (f"manifest {where}; data_id {ids} (fingerprint of the manifest rows and their split); sources: "
                  f"{per or 'not recorded'}. The authors add how and when the data were collected")


def _eligibility(f: Facts) -> tuple[str, str]:
    reasons = f.quarantine["reason"].str.replace(r"^row \d+: ", "").str.replace(r"^.*?: ", "") \
        .value_counts().sort("count", descending=True) if f.quarantine.height else pl.DataFrame()
    why = "; ".join(f"{r['reason']} ({r['count']})" for r in reasons.head(5).iter_rows(named=True))
    tasks = ", ".join(f"{t}: labels {', '.join(TASKS.get(t).labels)}" for t in f.column("task") if t in TASKS)
    return PART, (f"{f.quarantine.height} manifest row(s) left out, each named with its reason in quarantine.csv"
                  f"{': ' + why if why else ''}; rows whose label is outside the task are not used ({tasks}). "
                  f"The authors state the clinical inclusion criteria")


def _preprocessing(f: Facts) -> tuple[str, str]:
    reps = ", ".join(f.column("representation"))
    dil = f" and the mask-dilation axis ({', '.join(map(str, f.study.get('mask_dilation') or []))} px)" \
        if f.run.dilated is not None else ""
    return RUN, (f"every image decoded (DICOM photometry applied), stretched over [0, 1], resized to "
                 f"{', '.join(f.column('image_size'))} px with a covering lung mask; representations {reps}{dil}; "
                 f"each backbone's normalisation from its registry entry; augmentation: "
                 f"{'none (--no-augment)' if f.study.get('no_augment') else 'as the recipe sets it'} (model cards: "
                 f"trials/<id>/model.json)")


def _subsets(f: Facts) -> tuple[str, str]:
    parts = [f"{t}: {' vs '.join(TASKS.get(t).classes)}" for t in f.column("task") if t in TASKS]
    return RUN, "task(s) " + "; ".join(parts) + " (cxrray.data.tasks: the classes each manifest label maps to)"


def _masks(f: Facts) -> tuple[str, str]:
    checked = (f"; each checked against the lung U-Net {f.study['mask_unet']} (Dice >= 0.85, else quarantined)"
               if f.study.get("mask_unet") else "")
    gate = "not gated (--masks-unchecked)" if f.study.get("masks_unchecked") else \
        "gated (two lung regions, plausible area, inside the body), a mask shared by two images quarantined"
    return PART, (f"lung masks from the manifest, {gate}{checked}. The authors state who drew the labels and "
                  f"masks, with which tools and qualifications")


def _sample_size(f: Facts) -> tuple[str, str]:
    a = f.run.aurocs
    if not a.height:
        return PART, "no analysed trial"
    width = (a["ci_hi"] - a["ci_lo"]).drop_nulls().drop_nans()
    rules = f.run.options.rules
    pos, neg = (int(num(a[c].drop_nulls().max() or 0)) for c in ("patients_pos", "patients_neg"))
    if not width.len():
        return PART, (f"test set {pos} positive / {neg} negative patients: no AUROC interval "
                      f"can be estimated (a class without test patients, or no usable scores). The authors justify "
                      f"the size in advance")
    return PART, (f"test set {pos} positive / {neg} negative "
                  f"patients; 95 % AUROC intervals {num(width.min()):.3f}-{num(width.max()):.3f} wide, so an AUROC "
                  f"within "
                  f"0.5 +/- {rules.margin_auroc:g} (no shortcut) can be shown only where the corrected interval is "
                  f"narrower than {2 * rules.margin_auroc:g}; an inconclusive verdict names the patients that "
                  f"would decide it (python -m cxrray.analysis plan). The authors justify the size in advance")


def _partitions(f: Facts) -> tuple[str, str]:
    if not f.splits.height:
        return PART, "splits.csv missing"
    per = f.splits.group_by("split").agg(pl.col("patient_id").n_unique().alias("p"), pl.len().alias("i"))
    text = ", ".join(f"{r['split']} {r['p']} patients / {r['i']} images" for r in per.sort(SPLIT_ORDER).iter_rows(
        named=True))
    shared = int(f.splits.group_by("patient_id").agg(pl.col("split").n_unique())["split"].gt(1).sum())
    return RUN, (f"patient-level split (seed {f.study.get('split_seed', 0)}, stratified by label): {text}; "
                 f"{shared} patient(s) in two splits (splits.csv); the test split is read only for the final "
                 f"evaluation")


def _model(f: Facts) -> tuple[str, str]:
    st = f.study
    recipe = (f"recipe {st.get('recipe', 'demo')} (epochs {st.get('epochs') or 'as the recipe'}, batch "
              f"{st.get('batch_size') or 'as the recipe'}, lr {st.get('lr') or 'as the recipe'}); study.yaml "
              f"reruns it") if st else "the recipe is not recorded (no study.yaml: a run from before provenance)"
    return (RUN if st else PART), (f"backbones {', '.join(f.column('backbone'))} (cxrray.models registry), "
                                   f"initialisation {', '.join(f.column('init')) or 'random'}; seeds "
                                   f"{', '.join(f.column('seed'))}; {recipe}")


def _selection(f: Facts) -> tuple[str, str]:
    return RUN, ("each trial keeps its epoch best on validation AUROC; among hyper-parameter settings of one "
                 "protocol cell the one best on validation (ties: smallest trial id); no ensembling")


def _statistics(f: Facts) -> tuple[str, str]:
    return RUN, ("AUROC with a patient-clustered 95 % interval; DeLong tests between representations, Holm "
                 "within a family; exact permutation over patients where few; " + f.run.options.rules.text())


def _robustness(f: Facts) -> tuple[str, str]:
    seeds = len(f.column("seed")) > 1 or len(f.column("fold")) > 1
    done = [n for n, file in (("seeds or folds as replicates (random effects)", "cell_verdicts.csv" if seeds else ""),
                              ("mask dilation", "dilation.csv"), ("transfer across representations",
                                                                  "transfer_matrix.csv"),
                              ("calibration", "calibration.csv"), ("source-only ceiling", "source_ceiling.csv"))
            if f.has(file)]
    return (RUN if done else PART), ("; ".join(done) or "no robustness analysis in this run") + \
        " (analysis/*.csv, report sections of the same names)"


def _explain(f: Facts) -> tuple[str, str]:
    saliency = f.table("saliency_in_lungs.csv")
    if "lung_share_pred" in saliency.columns and saliency["lung_share_pred"].drop_nulls().len():
        return RUN, ("Grad-CAM share inside the lungs per trial, with the model- and data-randomisation sanity "
                     "checks (analysis/saliency_in_lungs.csv, the report's Saliency section)")
    why = "no saved model could be explained" if saliency.height else \
        "saliency was not run (--analysis statistics or --skip saliency)"
    return AUTHORS, why


def _external(f: Facts) -> tuple[str, str]:
    designs = f.column("design")
    if "independent" in designs:
        return RUN, "design 'independent': each source left out in turn as the test set (source_bias study)"
    return AUTHORS, f"designs in this run: {', '.join(designs) or 'random'}; no external test set"


def _flow(f: Facts) -> tuple[str, str]:
    return RUN, (f"{f.splits.height + f.quarantine.height} manifest rows -> {f.quarantine.height} left out "
                 f"(quarantine.csv) -> {f.splits.height} split by patient (splits.csv); per trial the images "
                 f"scored are in predictions.parquet")


def _demographics(f: Facts) -> tuple[str, str]:
    table = demographics(f.splits)
    if table.is_empty():
        return PART, "the manifest has no sex or age: the authors report them"
    return RUN, "per split: " + "; ".join(
        f"{r['split']} {r['patients']} patients"
        + (f", {r['female %']:.0f} % female" if r.get("female %") is not None and r["female %"] == r["female %"]
           else "") + (f" ({r['sex unknown']} of unknown sex)" if r.get("sex unknown") else "")
        + (f", age median {r['age median']:.0f}" if r.get("age median") is not None else "")
        for r in table.iter_rows(named=True))


def _performance(f: Facts) -> tuple[str, str]:
    return RUN, ("validation AUROC (best epoch) and test AUROC with its interval per trial (analysis/"
                 "trial_aurocs.csv, auroc_table.csv); balanced accuracy and per-class metrics (trial_metrics.csv)")


def _failures(f: Facts) -> tuple[str, str]:
    done = [n for n, file in (("confusion matrices", "confusion"), ("accuracy per severity", "severity_accuracy.csv"),
                              ("subgroup AUROCs", "subgroups.csv"), ("false-negative rate per subgroup",
                                                                      "underdiagnosis.csv"))
            if f.has(file)]
    return (RUN if done else PART), "; ".join(done) + ". The authors describe typical failure cases"


def _code(f: Facts) -> tuple[str, str]:
    last = f.invocations[-1] if f.invocations else {}
    pk = last.get("packages", {})
    return PART, (f"cxrray commit {last.get('cxrray_commit') or 'unknown'}; "
                  + ", ".join(f"{k} {v}" for k, v in list(pk.items())[:6])
                  + "; the command and study.yaml in provenance.json. The authors give the public repository")


def _fairness(f: Facts) -> tuple[str, str]:
    if f.has("subgroups.csv") or f.has("underdiagnosis.csv"):
        return RUN, ("AUROC and false-negative rate per sex, age band, view and source, patient-clustered, Holm per "
                     "trial (analysis/subgroups.csv, underdiagnosis.csv)")
    return AUTHORS, "no subgroup columns in the manifest"


def _imbalance(f: Facts) -> tuple[str, str]:
    how = "sampler-balanced batches" if f.study.get("balanced") else "class-weighted loss from the train split"
    return RUN, f"{how}; AUROC and balanced accuracy, which do not depend on prevalence"


def _authors(f: Facts) -> tuple[str, str]:
    return AUTHORS, ""


# (guideline, item, topic, answer): CLAIM 2024 items 1-42, then the TRIPOD+AI items the run answers in part
ITEMS: tuple[tuple[str, str, str, Answer], ...] = (
    ("CLAIM 2024", "1-6", "title, abstract, background, objectives, study design and goal", _authors),
    ("CLAIM 2024", "7", "data sources", _data_sources),
    ("CLAIM 2024", "8", "eligibility: inclusion and exclusion", _eligibility),
    ("CLAIM 2024", "9", "data preprocessing", _preprocessing),
    ("CLAIM 2024", "10-11", "selection of data subsets; definitions of data elements", _subsets),
    ("CLAIM 2024", "12", "de-identification", lambda f: (PART, "DICOM tags are never copied into shards, run files, "
                                                          "W&B or the report (PHI test); the authors describe "
                                                          "their de-identification")),
    ("CLAIM 2024", "13", "missing data", lambda f: (RUN, f"{f.quarantine.height} unreadable or incomplete row(s) "
                                                    f"left out and named (quarantine.csv); an unknown subgroup "
                                                    f"value is its own 'missing' group")),
    ("CLAIM 2024", "14-18", "reference standard, annotation and its quality control", _masks),
    ("CLAIM 2024", "19", "intended sample size", _sample_size),
    ("CLAIM 2024", "20-21", "partitions and the level at which they are disjoint", _partitions),
    ("CLAIM 2024", "22-25", "model, software, initialisation, training", _model),
    ("CLAIM 2024", "26-27", "selection of the final model; ensembling", _selection),
    ("CLAIM 2024", "28-29", "performance metrics; statistical significance and uncertainty", _statistics),
    ("CLAIM 2024", "30", "robustness or sensitivity analysis", _robustness),
    ("CLAIM 2024", "31", "explainability", _explain),
    ("CLAIM 2024", "32", "validation on external data", _external),
    ("CLAIM 2024", "33", "flow of participants", _flow),
    ("CLAIM 2024", "34", "demographic and clinical characteristics per partition", _demographics),
    ("CLAIM 2024", "35-36", "performance on every partition; accuracy estimates with their precision", _performance),
    ("CLAIM 2024", "37", "failure analysis", _failures),
    ("CLAIM 2024", "38-40", "limitations, implications, registration", _authors),
    ("CLAIM 2024", "41", "protocol, data and code availability", _code),
    ("CLAIM 2024", "42", "funding", _authors),
    ("TRIPOD+AI", "5a", "data sources", _data_sources),
    ("TRIPOD+AI", "6b", "eligibility", _eligibility),
    ("TRIPOD+AI", "7", "data preparation", _preprocessing),
    ("TRIPOD+AI", "10", "sample size", _sample_size),
    ("TRIPOD+AI", "12a", "how the data were used (partitions)", _partitions),
    ("TRIPOD+AI", "12c", "model type and building", _model),
    ("TRIPOD+AI", "12e", "performance measures", _statistics),
    ("TRIPOD+AI", "13", "class imbalance", _imbalance),
    ("TRIPOD+AI", "14", "fairness", _fairness),
    ("TRIPOD+AI", "18f", "code availability", _code),
    ("TRIPOD+AI", "20a", "flow of participants", _flow),
    ("TRIPOD+AI", "20b", "participant characteristics", _demographics),
    ("TRIPOD+AI", "23a", "model performance with its uncertainty", _performance),
    ("TRIPOD+AI", "23b", "heterogeneity across subgroups", _fairness),
)


def demographics(splits: pl.DataFrame) -> pl.DataFrame:
    """Per split: patients, images, share of women and age (median, quartiles) where the manifest has them."""
    if splits.is_empty() or not {"sex", "age"} & set(splits.columns):
        return pl.DataFrame()
    patients = splits.unique("patient_id", keep="first")
    aggs = [pl.len().alias("patients")]
    if "sex" in splits.columns:  # of the patients whose sex is recorded (F, M, O); the others are counted apart
        sex = pl.col("sex").cast(pl.Utf8).fill_null("")
        aggs += [(100 * (sex == "F").sum() / (sex != "").sum()).alias("female %"),
                 (sex == "").sum().alias("sex unknown")]
    if "age" in splits.columns:
        age = pl.col("age").cast(pl.Float64, strict=False)
        aggs += [age.median().alias("age median"), age.quantile(0.25).alias("age q1"),
                 age.quantile(0.75).alias("age q3")]
    images = splits.group_by("split").agg(pl.len().alias("images"))
    return patients.group_by("split").agg(aggs).join(images, on="split").sort(SPLIT_ORDER)


def checklist_table(facts: Facts) -> pl.DataFrame:
    rows = []
    for guideline, item, topic, answer in ITEMS:
        status, text = answer(facts)
        rows.append({"guideline": guideline, "item": item, "topic": topic, "answered by": status,
                     "where this run answers it": text})
    return pl.DataFrame(rows)


def markdown(table: pl.DataFrame) -> str:
    """The checklist as a Markdown table, for a submission."""
    head = "| guideline | item | topic | answered by | where this run answers it |\n|---|---|---|---|---|\n"
    return head + "".join(f"| {r['guideline']} | {r['item']} | {r['topic']} | {r['answered by']} | "
                          f"{_cell(r['where this run answers it'])} |\n" for r in table.iter_rows(named=True))


def _cell(text: str) -> str:
    """Manifest text in a Markdown cell: HTML escaped (a Markdown viewer renders raw ``<script>`` from a source
    name), a pipe never splits the cell."""
    return html.escape(text, quote=False).replace("|", "/")


def _facts(run: LoadedRun) -> Facts:
    invocations, study_text = provenance.read(run.layout)
    study = yaml.safe_load(study_text) or {} if study_text else {}
    splits, quarantine = (pl.read_csv(p, infer_schema_length=None) if p.exists() else pl.DataFrame()
                          for p in (run.layout.splits(), run.layout.quarantine()))
    if quarantine.is_empty():
        quarantine = pl.DataFrame(schema={"row": pl.Int64, "image_path": pl.Utf8, "reason": pl.Utf8})
    folder = run.layout.analysis
    written = frozenset(p.name for p in folder.iterdir()) if folder.exists() else frozenset()
    return Facts(run, study, invocations, splits, quarantine, written)


@analysis_step(order=99)
def checklist(run: LoadedRun) -> Artifacts:
    """CLAIM 2024 and TRIPOD+AI items with where this run answers them (last: it reads what the steps wrote)."""
    facts = _facts(run)
    table = checklist_table(facts)
    run.layout.analysis_file("checklist.md").write_text(markdown(table))
    counts = table.group_by("answered by").len()
    n = dict(zip(counts["answered by"], counts["len"], strict=True))
    a = Artifacts(tables={"checklist": table})
    demo = demographics(facts.splits)
    if not demo.is_empty():
        a.tables["split_demographics"] = demo
    a.text = (f"\n\nReporting checklist (CLAIM 2024, TRIPOD+AI; analysis/checklist.md): {n.get(RUN, 0)} items "
              f"answered by the run, {n.get(PART, 0)} partly, {n.get(AUTHORS, 0)} to be written by the authors")
    a.sections = [Section("Reporting checklist: CLAIM 2024 and TRIPOD+AI", tables=tuple(a.tables), group="reporting",
                          note="item numbers of CLAIM 2024 (42 items) and TRIPOD+AI (27 items); the topics are "
                               "paraphrased: check the official checklists before a submission. analysis/"
                               "checklist.md is this table for a submission")]
    return a
