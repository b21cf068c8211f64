"""The study commands: each module declares its ``Study`` record (axes, presets, checks), its parser and
``main``. ``sweeps/<name>.py`` runs one (``python sweeps/hide_seek.py``, what the README and the cluster
instructions call) and ``cxrray <command>`` runs any (``cxrray.studies.command``)."""
