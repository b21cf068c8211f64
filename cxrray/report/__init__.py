"""Report: presents what the analysis steps found, reading only typed records (``page``: ``Artifacts``,
``Section``, ``Answer``, ``ReportRun``): the HTML report (``html``, ``templates/``) and the study's W&B workspace
(``dashboard``). The steps run in ``cxrray.analysis.analyze``, which hands their artifacts here."""
