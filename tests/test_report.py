"""The report as a reviewer reads it, on a stored run with a planted answer (no training): the verdict card's
text and colours, protocol order, constant columns named once, class codes defined, no stale section after a
re-analysis, and a PDF (headless chromium) whose first page keeps every AUROC and CI of the card."""

import dataclasses
import re
import shutil
import subprocess
from html.parser import HTMLParser

import polars as pl
import pytest
from test_analysis_stats import _run

from cxrray.analysis.analyze import run_analysis

PLANTED = {"lungs_removed": 2.0, "original": 3.0, "lungs_boxed_out": 0.0, "lungs_isolated": 2.5}  # not in order


class _Text(HTMLParser):
    """The page's visible text, and the class and text of each verdict-grid cell entry."""

    def __init__(self):
        super().__init__()
        self.text, self.cells, self._cell, self._skip = [], [], None, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "div" and (a.get("class") or "").startswith("v-"):
            self._cell = [a["class"], ""]

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if tag == "div" and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)
            if self._cell is not None:
                self._cell[1] += data


def _page(path):
    parser = _Text()
    parser.feed(path.read_text())
    return " ".join(" ".join(parser.text).split()), parser.cells


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    _run(out, PLANTED, n=1200)  # enough patients for "no shortcut" (equivalence within 0.5 +/- 0.1)
    return out, run_analysis(out)


def test_verdict_card_opens_the_report_with_the_answer_in_protocol_order(planted):
    out, result = planted
    text, cells = _page(result.report)
    findings = result.artifacts["shortcut"].tables["shortcut_findings"]
    verdicts = dict(zip(findings["representation"], findings["verdict"], strict=True))
    assert verdicts == {"lungs_removed": "shortcut", "lungs_boxed_out": "no_shortcut"}
    # the answer comes first, before any section, with a sentence per lung-hiding trial
    assert text.index("SHORTCUT: 1/2 lung-hiding trials keep the signal") < text.index("Statistics")
    assert text.index("resnet18 on lungs_removed: SHORTCUT: AUROC") < text.index("Statistics")
    # the grid: rows in protocol order, each cell AUROC [CI] with its verdict colour
    aurocs = pl.read_csv(out / "analysis" / "trial_aurocs.csv")
    expected = []
    for rep in ("original", "lungs_isolated", "lungs_removed", "lungs_boxed_out"):
        r = aurocs.filter(pl.col("representation") == rep).row(0, named=True)
        v = {"lungs_removed": "v-shortcut", "lungs_boxed_out": "v-no_shortcut"}.get(rep, "v-visible")
        expected.append((v, f"{r['auroc']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"))
    grid = [(c, re.sub(r"^\W+", "", t).strip()) for c, t in cells]
    assert grid == expected
    # a high AUROC is not "good": the lungs-removed shortcut is red, the lungs-visible reference uncoloured
    css = result.report.read_text()
    assert ".v-shortcut{background:#f9dcdc}" in css and ".v-visible{background:#ffffff}" in css


def test_a_lung_hiding_trial_without_a_finding_is_not_judged_never_a_made_up_verdict(planted, tmp_path):
    """With the shortcut step skipped the card called every lung-hiding trial "inconclusive", a verdict the rule
    never gave (issue 38); it is "not judged", grey, with the meaning in the legend."""
    from cxrray.analysis.steps import AnalysisOptions

    out, _ = planted
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("analysis*", "report.html", ".cxrray.lock*"))
    result = run_analysis(copy, AnalysisOptions(skip=("shortcut", "dilation"), saliency=0))
    _, cells = _page(result.report)
    classes = [c for c, _ in cells]
    assert classes == ["v-visible", "v-visible", "v-not_judged", "v-not_judged"], classes
    assert ".v-not_judged{background:#f5f5f5}" in result.report.read_text()  # grey: no claim


def test_tables_are_readable_and_every_class_code_is_defined(planted):
    _out, result = planted
    text, _ = _page(result.report)
    assert "NCV = not COVID-19: normal (NOR)" in text and "CVP = COVID-19 pneumonia [positive class]" in text
    assert " nan " not in f" {text} " and "None" not in text
    # constant columns are said once, not repeated per row
    assert "The same in every row: study = hide_seek; backbone = resnet18; task = CL2; pretraining = none" in text
    # the DeLong matrix names cells by what varies, in protocol order, with an empty diagonal
    matrix = dict(result.artifacts["delong"].sections[0].extra)
    (frame,) = matrix.values()
    assert frame["cell"].to_list() == ["original", "lungs_isolated", "lungs_removed", "lungs_boxed_out"]
    assert all(frame[c][i] is None for i, c in enumerate(frame.columns[1:]))


def test_a_reanalysis_leaves_no_stale_section(planted, tmp_path):
    out, _ = planted
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "analysis" / "gradcam_grid.png").write_bytes(b"stale")  # as if an earlier analysis had made one
    result = run_analysis(copy)
    text, _ = _page(result.report)
    # no model files: no maps and no stale figure, but every trial is named with why (never a silent drop)
    assert "Grad-CAM of the predicted class" not in text and text.count("model missing") >= 4
    assert not (copy / "analysis" / "gradcam_grid.png").exists()
    assert "Dataset-design bias" not in text  # a step with nothing to show has no empty section


def test_an_interrupted_reanalysis_leaves_the_previous_analysis_whole(planted, tmp_path, monkeypatch):
    """A re-analysis is written aside (analysis.partial/) and swapped in whole: Ctrl-C in the middle of it leaves
    the previous analysis/ and report exactly as they were; the next analysis completes and clears the rest."""
    from cxrray.analysis import steps

    out, _ = planted
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = {p.relative_to(copy): p.read_bytes() for p in (copy / "analysis").rglob("*") if p.is_file()}
    report = (copy / "report.html").read_bytes()
    real = steps.ordered_steps

    def interrupted():
        todo = real()
        broken = dataclasses.replace(todo[3], run=lambda run: (_ for _ in ()).throw(KeyboardInterrupt()))
        return [*todo[:3], broken, *todo[4:]]

    monkeypatch.setattr("cxrray.analysis.analyze.ordered_steps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_analysis(copy)
    after = {p.relative_to(copy): p.read_bytes() for p in (copy / "analysis").rglob("*") if p.is_file()}
    assert after == before and len(before) > 10
    assert (copy / "report.html").read_bytes() == report
    monkeypatch.setattr("cxrray.analysis.analyze.ordered_steps", real)
    run_analysis(copy)
    assert sorted(p.name for p in copy.iterdir() if p.name.startswith("analysis")) == ["analysis"]
    assert {p.relative_to(copy) for p in (copy / "analysis").rglob("*") if p.is_file()} == set(before)


def test_report_prints_with_every_auroc_and_ci_on_the_first_page(planted, tmp_path):
    """Headless chromium prints the page to PDF (A4 landscape); page 1 holds the verdict and every AUROC with
    its CI, read back from the PDF's text."""
    pypdf = pytest.importorskip("pypdf")
    out, result = planted
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (make test installs it where apt-get is available)")
    pdf = tmp_path / "report.pdf"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                    "--virtual-time-budget=5000", f"--print-to-pdf={pdf}", result.report.as_uri()],
                   capture_output=True, timeout=120)
    pages = pypdf.PdfReader(pdf).pages
    first = " ".join(pages[0].extract_text().split())
    assert "SHORTCUT: 1/2 lung-hiding trials keep the signal" in first
    assert "Test AUROC [95 % interval, clustered by patient] per representation and backbone" in first
    aurocs = pl.read_csv(out / "analysis" / "trial_aurocs.csv")
    for r in aurocs.iter_rows(named=True):
        assert f"{r['auroc']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]" in first, r["representation"]
    every = " ".join(" ".join(p.extract_text().split()) for p in pages)
    for header in ("AUROC [corrected interval]", "retained % [interval]", "CI low", "CI high"):
        assert header in every  # the wide tables' AUROC and CI columns are printed, not cut off


def test_the_analysis_runs_the_steps_chosen_and_says_which(planted, tmp_path):
    """``--analysis statistics`` leaves out every step that loads the saved models, ``--skip`` names more; the
    text (and so the report) says which steps ran; a misspelt step is refused with the valid names."""
    from cxrray.analysis.steps import AnalysisOptions, analysis_options
    from cxrray.registry import UnknownNameError

    out, full = planted
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    options = analysis_options("statistics", AnalysisOptions(skip=("calibration",)))
    assert options.skip == ("calibration", "saliency", "transfer")
    result = run_analysis(copy, options)
    assert list(result.artifacts) == [s for s in full.artifacts if s not in options.skip]
    assert result.text.rstrip().endswith("skipped calibration, saliency, transfer (--analysis / --skip)")
    assert not (copy / "analysis" / "calibration.csv").exists() and (copy / "analysis" / "trial_aurocs.csv").exists()
    text, _ = _page(result.report)
    assert "skipped calibration, saliency, transfer" in text
    with pytest.raises(UnknownNameError, match=r"valid: .*bias.*transfer"):
        analysis_options("all", AnalysisOptions(skip=("tranfser",)))
