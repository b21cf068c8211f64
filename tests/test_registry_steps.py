"""Tests generated from the METHODS and ANALYSES registries (issue 27, item 6): registering a training method or an
analysis step is also what tests it, as registering a backbone or a representation already is."""

from __future__ import annotations

import pytest
from test_analysis_stats import _run

import cxrray.training  # noqa: F401  (registers the methods)
from cxrray.analysis.run import load_run
from cxrray.analysis.steps import ANALYSES, AnalysisOptions, ordered_steps
from cxrray.config import TrialSpec
from cxrray.data.tasks import TASKS
from cxrray.registry import UserError
from cxrray.report.page import GROUPS, Artifacts
from cxrray.training.methods import METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_states_what_it_can_train(name):
    """Its flags are honest: a task kind it cannot train, or resources it cannot use, are refused before Ray starts
    with its name in the message; one it can train passes."""
    method = METHODS.get(name)
    assert method.name == name and method.task_kinds
    for task in ("CL2", "CL3H", "NIH14"):
        spec = TrialSpec(study="s", data_id="d", representation="original", backbone="resnet18", task=task,
                         method=name)
        if TASKS.get(task).kind in method.task_kinds:
            method.validate(spec)
        else:
            with pytest.raises(UserError, match=f"method {name} needs"):
                method.validate(spec)
    if not method.multi_worker:
        with pytest.raises(UserError, match=f"method {name} trains on one worker"):
            method.check_resources(2, asha=False)
    method.check_resources(1, asha=False)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("steps")
    _run(out, {"original": 3.0, "lungs_removed": 2.0, "lungs_boxed_out": 0.0, "lungs_isolated": 2.5}, n=200)
    run = load_run(out, AnalysisOptions(saliency=0, transfer=False))
    run.layout.analysis.mkdir(parents=True, exist_ok=True)
    return run


def test_steps_run_in_their_declared_order():
    steps = ordered_steps()
    assert [s.order for s in steps] == sorted(s.order for s in steps) and len(steps) == len(ANALYSES.names())


@pytest.mark.parametrize("name", ANALYSES.names())
def test_every_step_returns_what_its_sections_name(name, stored_run):
    """Each step runs on stored predictions alone, says what it does, and every table or figure a section of its
    names is one it made (or none: a section never points at another step's artifact)."""
    step = ANALYSES.get(name)
    assert step.name == name and step.description
    made = step.run(stored_run)
    assert isinstance(made, Artifacts)
    for section in made.sections:
        assert section.group in GROUPS, section
        for table in section.tables:
            assert table in made.tables or not made.tables.get(table), (name, table)
    for figure in made.figures:
        assert stored_run.figure(figure).stat().st_size > 1_000, figure
