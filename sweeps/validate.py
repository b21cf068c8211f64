#!/usr/bin/env python
"""Known-answer validation of the hide-and-seek protocol on the phantom.

The command lives in ``cxrray/studies/validate.py`` (its options: ``--help``); ``cxrray validate`` runs
the same.
"""

from cxrray.studies.validate import *  # noqa: F403  (the record, presets and parser, for tests and scripts)
from cxrray.studies.validate import main
from cxrray.tuning import cli

if __name__ == "__main__":
    cli.run_cli(main, "validate.py")
