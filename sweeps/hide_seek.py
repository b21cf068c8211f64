#!/usr/bin/env python
"""ROI hide-and-seek sweep (Sadre et al. 2021): representation x backbone x seed.

The command lives in ``cxrray/studies/hide_seek.py`` (its options: ``--help``); ``cxrray hide-seek`` runs
the same.
"""

from cxrray.studies.hide_seek import *  # noqa: F403  (the record, presets and parser, for tests and scripts)
from cxrray.studies.hide_seek import main
from cxrray.tuning import cli

if __name__ == "__main__":
    cli.run_cli(main, "hide_seek.py")
