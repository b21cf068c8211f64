"""Report: runs the registered analysis steps over a run folder (``analyze``) and presents what they found: the
HTML report (``html``, ``templates/``), the study's W&B run (``summary``) and its workspace (``dashboard``)."""
