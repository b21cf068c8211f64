"""Run every registered analysis step on a run directory's stored predictions; write tables, text, report.

``run_analysis`` is the whole analysis: load the run once (``cxrray.analysis.run.load_run``), run the steps of
``ANALYSES`` in order, write each step's tables under ``analysis/`` (the folder is rewritten from what exists now,
so a re-analysis with fewer steps leaves nothing stale; it is written as ``analysis.partial/`` and swapped in
whole, so an interrupted re-analysis leaves the previous one in place), the prose to ``analysis/auroc_table.md``
and the report. Nothing here retrains; the training loop and Ray Tune are never imported.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import itertools
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

# Importing a step's module registers it: a new analysis is one module (named after its step) plus its line here.
from cxrray.analysis import (  # noqa: F401
    aurocs,
    bias,
    calibration,
    checklist,
    delong,
    demographics,
    dilation,
    metrics,
    saliency,
    shortcut,
    shortcut_testing,
    source_ceiling,
    subgroups,
    transfer,
    underdiagnosis,
)
from cxrray.analysis.run import load_run
from cxrray.analysis.steps import AnalysisOptions, ordered_steps
from cxrray.report.html import write_report
from cxrray.report.page import Artifacts

FAMILY = AnalysisOptions().family


@dataclass(frozen=True)
class StepFailure:
    """A step that raised: its name, the error in one line, and the file that keeps its traceback."""

    step: str
    error: str
    log: Path

    def line(self) -> str:
        return f"step {self.step} failed: {self.error} (traceback: {self.log})"


@dataclass(frozen=True)
class AnalysisResult:
    text: str  # what the terminal shows (also analysis/auroc_table.md)
    artifacts: dict[str, Artifacts]  # per step name, in step order
    report: Path
    failed: tuple[StepFailure, ...] = ()  # steps that raised; every other step's tables and the report stand

    def failure_lines(self) -> list[str]:
        """One console line per failed step (empty when every step ran)."""
        return [f"[cxrray] {f.line()}; the other steps' tables and the report were written" for f in self.failed]


def run_analysis(run_dir: str | Path, options: AnalysisOptions = AnalysisOptions()) -> AnalysisResult:
    """Every registered step on ``run_dir``; tables under ``analysis/``, the text, and ``report.html``."""
    final = load_run(run_dir, options)
    run = dataclasses.replace(final, layout=final.layout.staging())  # written aside, swapped in when complete
    out = run.layout.analysis
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    artifacts, failed = {}, []
    steps = ordered_steps()
    chosen = [s for s in steps if s.name not in options.skip]
    heard: dict[tuple[str, str], int] = {}  # (step, a library's warning) -> how often: said once, counted
    for k, step in enumerate(chosen, start=1):
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                made = step.run(run)
            for w in caught:
                key = (step.name, f"{w.category.__name__}: {' '.join(str(w.message).split())[:200]}")
                heard[key] = heard.get(key, 0) + 1
            for name, frame in itertools.chain(made.tables.items(), made.detail.items()):
                path = run.layout.analysis_file(f"{name}.csv")
                path.parent.mkdir(parents=True, exist_ok=True)
                frame.write_csv(path)
            made = dataclasses.replace(made, detail={})  # written; the report reads tables, not detail
        except Exception as exc:  # noqa: BLE001  (one step's failure never takes the others or the report down)
            log = f"failed/{step.name}.txt"  # kept in the staged folder, read from the final one
            failed.append(_failure(step.name, exc, run.layout.analysis_file(log), final.layout.analysis_file(log)))
            continue
        finally:  # progress a person can see on a long analysis (saliency and transfer take minutes)
            release_memory()
            print(f"[cxrray] analysis step {k}/{len(chosen)} {step.name}: {time.perf_counter() - t0:.1f} s",
                  flush=True)
        artifacts[step.name] = made
    skipped = [s.name for s in steps if s.name in options.skip]
    text = "".join(a.text for a in artifacts.values()) + (
        f"\n\nAnalysis steps: ran {', '.join(s.name for s in chosen)}; skipped {', '.join(skipped)} (--analysis / "
        f"--skip)" if skipped else "") + "".join(f"\n\nFAILED: {f.line()}" for f in failed)
    if heard:  # scikit-learn's per-trial warnings printed five times a run; each step's own check says why
        run.layout.analysis_file("warnings.txt").write_text("".join(
            f"step {step}: {message} ({n}x)\n" for (step, message), n in heard.items()))
        text += (f"\n\nLibrary warnings: {sum(heard.values())} during the analysis, {len(heard)} distinct "
                 f"(analysis/warnings.txt)")
    run.layout.analysis_file("auroc_table.md").write_text(text + "\n")
    run = dataclasses.replace(final, layout=run.layout.swap_analysis())
    report = write_report(run.view(), text, artifacts, [(f.step, f.error, str(f.log)) for f in failed])
    return AnalysisResult(text, artifacts, report, tuple(failed))


def release_memory() -> None:
    """Hand the heap a step freed back to the system before the next step: glibc keeps freed small blocks (at
    10,000 trials calibration's per-trial arrays left 90 MiB behind, and the next step's peak stacked on it).
    A no-op where the C library has no ``malloc_trim``."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _failure(step: str, exc: Exception, staged: Path, log: Path) -> StepFailure:
    """The failure of ``step``: its traceback written to ``staged`` (``log`` once the analysis is swapped in),
    the error in one line."""
    import traceback

    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text("".join(traceback.format_exception(exc)))
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return StepFailure(step, f"{type(exc).__name__}: {first}" if first else type(exc).__name__, log)
