#!/usr/bin/env python
"""Source-bias sweep (Hasan et al. 2020): dataset design x task x backbone x seed/fold.

The command lives in ``cxrray/studies/source_bias.py`` (its options: ``--help``); ``cxrray source-bias`` runs
the same.
"""

from cxrray.studies.source_bias import *  # noqa: F403  (the record, presets and parser, for tests and scripts)
from cxrray.studies.source_bias import main
from cxrray.tuning import cli

if __name__ == "__main__":
    cli.run_cli(main, "source_bias.py")
