"""Where a run came from: the effective study as a YAML file that ``--config`` accepts, and per invocation
the command line, cxrray's version and git commit, the date, the host and the package versions.

``record`` is called by every study CLI once its options are final and before Ray starts; the report
shows both files (``RunLayout.study_file``, ``RunLayout.provenance``). Standard library and PyYAML only,
so it costs nothing at import.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from cxrray.config import RunLayout

PACKAGES = ("cxrray", "torch", "torchvision", "timm", "ray", "kornia", "pydicom", "scikit-learn", "grad-cam",
            "wandb", "polars", "numpy")


def package_versions() -> dict[str, str]:
    """Python and the installed version of every package the results depend on ("-" when absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def git_commit(where: Path = Path(__file__).resolve().parent) -> str | None:
    """The commit of the cxrray checkout (``+dirty`` with uncommitted changes), None outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def record(layout: RunLayout, study: str, options: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """Write ``study.yaml`` (``study:`` plus every option: ``--config study.yaml`` reruns this study) and append
    this invocation to ``provenance.json``; returns the invocation's entry."""
    import yaml

    layout.root.mkdir(parents=True, exist_ok=True)
    values = dict(options)  # ``Study.to_dict``: YAML-able, absolute paths, how-to-run options left out
    layout.study_file.write_text("# the effective study of this run: python sweeps/" + study + ".py --config "
                                 "study.yaml reruns it\n" + yaml.safe_dump({"study": study} | values, sort_keys=False))
    entry = {"study": study, "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
             "cxrray_commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
             "platform": platform.platform(), "packages": package_versions()}
    past = json.loads(layout.provenance.read_text()).get("invocations", []) if layout.provenance.exists() else []
    layout.provenance.write_text(json.dumps({"invocations": [*past, entry]}, indent=1))
    return entry


def read(layout: RunLayout) -> tuple[list[dict[str, Any]], str]:
    """(the recorded invocations, the study YAML text); empty for a run from before provenance was recorded."""
    runs = json.loads(layout.provenance.read_text()).get("invocations", []) if layout.provenance.exists() else []
    return runs, layout.study_file.read_text() if layout.study_file.exists() else ""
