"""Explain: what needs the saved models. Grad-CAM and LIME maps and their sanity checks (``saliency``,
``cam_geometry``, ``lime_maps``, ``sanity``), models scored on every representation (``scoring``), probes of the
run's thumbnails (``probe``), where that work runs (``fanout``) and its cache keyed by content (``cache``)."""
