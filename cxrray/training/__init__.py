"""Training stage: pure loops and metrics (no Ray), the registered training methods, the sessions and the
generic trial driver (``worker.run_trial``). Importing the package registers every built-in method."""

from cxrray.training import fucitnet_trial, short, standard  # noqa: F401  (register the methods)
