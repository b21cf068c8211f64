#!/usr/bin/env python
"""Staged pretraining sweep (Fricks et al. 2021): pretraining paths a-f x seed.

The command lives in ``cxrray/studies/staged_pretraining.py`` (its options: ``--help``); ``cxrray staged`` runs
the same.
"""

from cxrray.studies.staged_pretraining import *  # noqa: F403  (the record, presets and parser, for tests and scripts)
from cxrray.studies.staged_pretraining import main
from cxrray.tuning import cli

if __name__ == "__main__":
    cli.run_cli(main, "staged_pretraining.py")
