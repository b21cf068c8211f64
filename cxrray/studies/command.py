"""``cxrray <command> [options]``: one entry point for every study and tool, with the options and help of the
scripts it stands for (``python sweeps/hide_seek.py`` keeps working: it is what the cluster instructions call).

    cxrray hide-seek --smoke-test          # = python sweeps/hide_seek.py --smoke-test
    cxrray analyze runs/hide_seek          # = python -m cxrray.analysis runs/hide_seek
    cxrray plan --auroc-hidden 0.7         # = python -m cxrray.analysis plan ...
    cxrray workspace runs/hide_seek        # = python -m cxrray.analysis workspace runs/hide_seek

Nothing heavy at import: ``cxrray --help`` and ``cxrray <command> --help`` answer without torch or Ray.
"""

from __future__ import annotations

import difflib
import importlib
import sys

# command -> (module, what it does, the script it stands for); a study module has ``main(argv)`` and runs
# through ``cli.run_cli`` (one-line errors, exit codes); a tool module has ``main(argv) -> int``.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "hide-seek": ("cxrray.studies.hide_seek", "ROI hide-and-seek sweep (Sadre et al.)", "sweeps/hide_seek.py"),
    "staged": ("cxrray.studies.staged_pretraining", "staged pretraining paths a-f (Fricks et al.)",
               "sweeps/staged_pretraining.py"),
    "source-bias": ("cxrray.studies.source_bias", "dataset-design source bias (Hasan et al.)",
                    "sweeps/source_bias.py"),
    "validate": ("cxrray.studies.validate", "known-answer validation on the phantom", "sweeps/validate.py"),
    "audit": ("cxrray.studies.audit", "audit a trained classifier you already have (no training)",
              "python -m cxrray.audit"),
    "analyze": ("cxrray.analysis.__main__", "rerun the analysis of a run directory", "python -m cxrray.analysis"),
    "plan": ("cxrray.analysis.__main__", "test patients a confident verdict needs",
             "python -m cxrray.analysis plan"),
    "workspace": ("cxrray.analysis.__main__", "push a run's W&B workspace (dashboards as code)",
                  "python -m cxrray.analysis workspace"),
    "segment": ("cxrray.segmentation.__main__", "lung U-Net: train, evaluate, fill, check masks",
                "python -m cxrray.segmentation"),
    "adapters": ("cxrray.data.adapters.__main__", "convert public datasets to manifests",
                 "python -m cxrray.data.adapters"),
}
STUDIES = ("hide-seek", "staged", "source-bias", "validate")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}}  {what} ({script})" for name, (_, what, script) in COMMANDS.items()]
    return "usage: cxrray <command> [options]   (cxrray <command> --help: its options)\n\ncommands:\n" + \
        "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        near = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        print(f"cxrray: error: unknown command {name!r}{hint}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name in STUDIES:
        from cxrray.tuning import cli

        sys.argv = [f"cxrray {name}", *rest]  # argparse's prog; the lock and provenance name the command once
        cli.run_cli(lambda: module.main(rest), f"cxrray {name}")
    result: int = module.main([name, *rest] if name in ("plan", "workspace") else rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
