"""cxrray: distributed shortcut and bias validation sweeps for chest X-ray classifiers.

Data flows one way through the package::

    data -> representations -> models -> training -> tuning -> analysis

``config`` and ``registry`` are shared foundations that import nothing else from
cxrray. A module imports only from its own stage or from stages before it
(``tests/test_architecture.py`` enforces this).
"""

__version__ = "0.1.0"
