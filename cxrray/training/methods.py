"""Training methods a trial can use (``TrialSpec.method``), timm-style registry.

``standard``: one supervised fit of the backbone (``worker.run_trial``). ``fucitnet``: the
class-inherent transformations of FuCiTNet / COVID-SDNet (``fucitnet``), two stages in one trial.
A variant with other settings is one more registration, e.g. a lambda sweep.
"""

from __future__ import annotations

from cxrray.registry import Registry
from cxrray.training.fucitnet import FuCiTConfig

METHODS: Registry[FuCiTConfig | None] = Registry("method")
METHODS.register("standard")(None)
METHODS.register("fucitnet")(FuCiTConfig())
