"""cxrray: distributed shortcut and bias validation sweeps for chest X-ray classifiers.

Data flows one way through the package::

    data -> representations -> models -> training -> tuning -> analysis

``config`` and ``registry`` are shared foundations that import nothing else from
cxrray. A module imports only from its own stage or from stages before it
(``tests/test_architecture.py`` enforces this).
"""

import os

__version__ = "0.1.0"

# Polars' allocator (jemalloc, configured by this variable when polars first allocates) keeps the pages a frame
# freed for later; the analysis makes and drops a few frames per trial, and at 10,000 trials the kept pages were
# 38 MiB after loading the run and 30-60 MiB more per step. Returned at once, the analysis' peak stays nearer to
# what it holds (``bench/many_trials.py``). A setting of the user's own wins; a process that imported polars
# before cxrray keeps polars' default.
ALLOCATOR = ("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
os.environ.setdefault(*ALLOCATOR)
