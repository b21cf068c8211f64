"""The plan's layering, enforced: the allowed imports between parts and the never-rules with their reasons.

Parts and rules follow the target layering (``shared/architecture.json``): data flows one way,
data -> representations -> models -> training -> tuning -> analysis, with the Core (specs, trial
context, run layout, registries) at the bottom. A violation names the file, the import and the reason.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "cxrray"

PARTS = {  # part -> the paths it is made of (relative to the repository root); the first match wins
    # entry points: the top floor
    "Commands": ("sweeps/", "cxrray/studies/", "cxrray/analysis/__main__.py", "cxrray/audit.py"),
    "Core": ("cxrray/config.py", "cxrray/registry.py", "cxrray/records.py", "cxrray/declared.py",
             "cxrray/scalars.py", "cxrray/runlock.py", "cxrray/provenance.py", "cxrray/wandb_run.py",
             "cxrray/__init__.py"),
    "Stats": ("cxrray/stats/",),  # pure functions of arrays: every stage may call them, they call no stage
    "Data": ("cxrray/data/",),
    "Segmentation": ("cxrray/segmentation/",),
    "Representations": ("cxrray/representations/",),
    "Models": ("cxrray/models/",),
    "Training": ("cxrray/training/",),
    "Tuning": ("cxrray/tuning/",),
    "Verdicts": ("cxrray/verdicts/",),  # the rules from interval to claim, their vocabularies and guarantees
    "Plots": ("cxrray/plots/",),  # drawing from tables: the steps draw with it, the report lays it out
    "Explain": ("cxrray/explain/",),  # what needs the saved models: Grad-CAM, LIME, scoring, probes
    "Analysis": ("cxrray/analysis/",),  # the loaded run, one module per registered step, and the run of them all
    "Report": ("cxrray/report/",),  # presents the steps' typed artifacts (HTML, the W&B workspace)
}
ALLOWED = {  # part -> the parts it may import besides itself
    "Core": set(),
    "Stats": set(),
    "Data": {"Core", "Stats"},
    "Representations": {"Core"},
    "Models": {"Core"},
    "Segmentation": {"Core", "Data", "Representations", "Stats"},
    "Training": {"Core", "Data", "Representations", "Models", "Stats"},
    "Tuning": {"Core", "Data", "Segmentation", "Representations", "Models", "Training", "Stats"},
    "Verdicts": {"Core", "Stats"},
    "Plots": {"Core", "Data", "Representations", "Verdicts"},
    "Explain": {"Core", "Data", "Representations", "Models", "Stats"},
    "Report": {"Core", "Data", "Representations", "Verdicts", "Plots"},
    "Analysis": {"Core", "Data", "Representations", "Models", "Stats", "Verdicts", "Plots", "Explain", "Report"},
    "Commands": {"Core", "Tuning", "Analysis", "Report", "Explain", "Verdicts", "Data", "Segmentation",
                 "Models", "Representations", "Plots"},  # (the audit loads a user's model and draws its figure)
}
NEVER = {  # (importer, imported): why not
    ("Data", "Representations"): "data flows one way",
    ("Data", "Models"): "data flows one way",
    ("Data", "Training"): "data flows one way",
    ("Data", "Tuning"): "data flows one way",
    ("Data", "Analysis"): "data flows one way",
    ("Representations", "Data"): "masking is tensor ops on any batch",
    ("Representations", "Models"): "masking knows no model",
    ("Representations", "Training"): "masking knows no trainer",
    ("Models", "Training"): "a model knows no loop",
    ("Models", "Tuning"): "a model knows no sweep",
    ("Training", "Tuning"): "a trial knows no sweep",
    ("Training", "Analysis"): "analysis reruns from stored predictions",
    ("Tuning", "Analysis"): "the sweep writes predictions; analysis reads them",
    ("Analysis", "Tuning"): "analysis needs no Ray Tune",
    ("Analysis", "Training"): "analysis reads stored predictions and models, not the loop",
    ("Stats", "Core"): "statistics are pure functions of arrays: no run folder, no spec",
    ("Stats", "Analysis"): "the steps call the statistics, never the reverse",
    ("Stats", "Verdicts"): "the verdict rules call the statistics, never the reverse",
    ("Verdicts", "Analysis"): "a rule judges intervals; it knows no step",
    ("Plots", "Analysis"): "a figure draws the tables it is given; it computes no step",
    ("Explain", "Analysis"): "the model-based tools know no step",
    ("Report", "Analysis"): "the steps hand typed artifacts on; presentation reads them and runs no step",
    ("Report", "Explain"): "presentation loads no model",
    ("Tuning", "Report"): "the sweep writes predictions; the report reads the analysis",
    ("Training", "Explain"): "a trial knows no explanation of its model",
    ("Core", "Stats"): "specs stay at the bottom",
    ("Core", "Data"): "specs stay at the bottom",
    ("Core", "Models"): "specs stay at the bottom",
    ("Core", "Training"): "specs stay at the bottom",
}


def _part_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    return next(p for p, prefixes in PARTS.items() if any(rel == x or rel.startswith(x) for x in prefixes))


def _part_of_module(module: str) -> str | None:
    rel = module.replace(".", "/")
    for part, prefixes in PARTS.items():
        for x in prefixes:
            stem = x.rstrip("/").removesuffix(".py")
            if rel == stem or rel.startswith(stem + "/"):
                return part
    return "Core" if rel == "cxrray" else None


def _imports(path: Path, prefix: str = "cxrray") -> set[str]:
    """Every module of ``prefix`` the file imports, at any depth (lazy imports inside functions count too);
    ``from pkg import mod`` names ``pkg.mod`` as well (the caller keeps what exists)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith(prefix))
    return names


FILES = sorted([*PKG.rglob("*.py"), *(ROOT / "sweeps").glob("*.py")])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layering(path):
    own = _part_of_file(path)
    for mod in _imports(path):
        target = _part_of_module(mod)
        if target is None or target == own:
            continue
        reason = NEVER.get((own, target))
        assert reason is None, f"{path.relative_to(ROOT)} ({own}) imports {mod} ({target}): never, {reason}"
        assert target in ALLOWED[own], f"{path.relative_to(ROOT)} ({own}) imports {mod} ({target}), not allowed"


def _graph(files: list[Path], root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports (lazy imports too), from the files' text."""
    def name(path: Path) -> str:
        return path.relative_to(root).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")

    known = {name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        found = set()
        for mod in _imports(path, prefix=name(files[0]).split(".")[0]):
            while mod and mod not in known:  # "from cxrray.analysis import steps" names the package
                mod = mod.rpartition(".")[0]
            if mod and mod != name(path):
                found.add(mod)
        graph[name(path)] = found
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan): an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_anywhere():
    """No module reaches itself through imports, lazy ones included (three circles were found and broken: the
    statistics moved to ``cxrray/stats/``, ``holm`` and ``trial_scores`` out of step modules, the option ranges
    onto the ``Study`` record)."""
    assert _circles(_graph(sorted(PKG.rglob("*.py")), ROOT)) == []


def test_a_planted_circle_is_caught(tmp_path):
    pkg = tmp_path / "planted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from planted.b import g\n\ndef f():\n    return g\n")
    (pkg / "b.py").write_text("def g():\n    from planted import c\n    return c\n")  # a lazy import counts
    (pkg / "c.py").write_text("import planted.a\n")
    (pkg / "d.py").write_text("from planted.a import f\n")  # imports into the circle, not part of it
    assert _circles(_graph(sorted(pkg.rglob("*.py")), tmp_path)) == [["planted.a", "planted.b", "planted.c"]]


def test_the_rules_forbid_what_the_plan_forbids():
    """The never-rules are not shadowed by the allowed arrows, and a planted violation is caught."""
    assert not [pair for pair in NEVER if pair[1] in ALLOWED[pair[0]]]
    assert _part_of_module("cxrray.tuning.runner") == "Tuning" and _part_of_module("cxrray.config") == "Core"
    assert NEVER[("Analysis", "Tuning")] and NEVER[("Analysis", "Training")]


def test_pure_training_helpers_import_no_ray():
    for name in ("loop.py", "outputs.py", "methods.py", "standard.py", "fucitnet.py", "fucitnet_trial.py", "heads.py",
                 "worker.py"):
        tree = ast.parse((PKG / "training" / name).read_text())
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.split(".")[0] == "ray" for m in mods), f"training/{name} imports Ray"


def test_no_module_spells_a_run_folder_path():
    """Paths under --out come from RunLayout / TrialDir (cxrray/config.py); nobody else joins their names."""
    spelled = ('"trials"', '"shards"', '"trial.json"', '"model.pt"', '"resume.pt"', '"attempts.log"',
               '"stopped.json"', '"predictions.parquet"', '"results.parquet"', '"report.html"', '/ "analysis"')
    offenders = []
    for path in FILES:
        own_folders = path.name in ("config.py", "pack.py") or "segmentation" in path.parts
        if own_folders:  # the layout itself; the packer and the U-Net job write folders of their own
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {s}" for s in spelled if s in text]
    assert not offenders, offenders


def test_the_analysis_reads_trials_only_through_their_records():
    """A trial's files reach the analysis through ``TrialRecord`` (trial.json) and ``load_model`` (model.pt with
    its card): no analysis module opens them itself."""
    offenders = []
    for path in sorted((PKG / "analysis").rglob("*.py")):
        text = path.read_text()
        own = ("json.loads(",) if path.name == "dashboard.py" else ()  # reads its own wandb_workspace.json
        offenders += [f"{path.name}: {s}" for s in (".meta.read_text", "torch.load(", ".model.exists", "json.loads(")
                      if s in text and s not in own]
    assert not offenders, offenders


def test_the_sweeps_hand_on_a_study_record_never_an_argparse_namespace():
    """A study command parses into its frozen ``Study`` (``cxrray.tuning.options``) and hands that on; no module
    takes or forwards a ``Namespace`` (the small module CLIs use theirs where they parse it), and no study file is
    checked through argparse internals."""
    offenders = []
    for path in FILES:
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {s}" for s in ("Namespace", "vars(args)", "._actions")
                      if s in text]
    assert not offenders, offenders
    for path in sorted((ROOT / "sweeps").glob("*.py")):
        tree = ast.parse(path.read_text())
        parse = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_args"), None)
        if parse is not None:
            assert isinstance(parse.returns, ast.Name) and parse.returns.id != "Namespace", path.name


def test_trial_files_are_read_only_through_their_records():
    """``trial.json`` and ``stopped.json`` are opened by ``cxrray.records`` alone."""
    offenders = [f"{p.relative_to(ROOT)}" for p in FILES if p.name != "records.py"
                 and (".meta.read_text" in p.read_text() or ".stopped.read_text" in p.read_text())]
    assert not offenders, offenders


def test_only_the_data_stage_writes_shards():
    """Shard sets are ingested and written by ``cxrray.data`` alone (``ShardStore``); the other stages read them."""
    offenders = []
    for path in FILES:
        if "data" in path.relative_to(ROOT).parts[:2]:
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {s}" for s in ("import ingest", "ShardWriter", "_done.json")
                      if s in text]
    assert not offenders, offenders


def test_every_stage_exists():
    assert all((PKG / s / "__init__.py").exists()
               for s in ("data", "representations", "segmentation", "models", "training", "tuning", "analysis"))


def test_every_module_has_its_tests_named_or_listed():
    """A newcomer finds a module's tests: ``tests/test_<name>.py``, or a row of ``tests/README.md`` naming test
    files that exist (issue 38)."""
    import re

    listed = {}
    for line in (ROOT / "tests" / "README.md").read_text().splitlines():
        m = re.match(r"\| `(cxrray\.[\w.]+)` \| (.+) \|$", line)
        if m:
            listed[m.group(1)] = re.findall(r"(test_\w+\.py)", m.group(2))
    unfound = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        stem = path.stem if path.stem != "__main__" else f"{path.parent.name}_main"
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if (ROOT / "tests" / f"test_{stem}.py").exists():
            continue
        files = listed.get(module, [])
        if not files or not all((ROOT / "tests" / f).exists() for f in files):
            unfound.append(module)
    assert not unfound, f"no test_<name>.py and no row in tests/README.md: {unfound}"
