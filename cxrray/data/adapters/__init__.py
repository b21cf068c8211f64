"""Dataset adapters: a public collection's own layout -> a cxrray manifest.

Each adapter is a registry entry ``fn(root, **options) -> pl.DataFrame`` of
manifest rows (paths relative to ``root``); ``write_manifest`` saves it next
to the data. ``python -m cxrray.data.adapters NAME ROOT`` does both.
Every adapter's docstring states the real layout, the licence and the citation.
"""

from cxrray.data.adapters import chexmask, dicom_folder, masks, modern, public  # noqa: F401  (register)
from cxrray.data.adapters.base import ADAPTERS, convert, write_manifest

__all__ = ["ADAPTERS", "convert", "write_manifest"]
