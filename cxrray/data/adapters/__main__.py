"""``python -m cxrray.data.adapters NAME ROOT``: convert a collection into a manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxrray.data.adapters import ADAPTERS, convert
from cxrray.registry import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxrray.data.adapters", description=__doc__)
    p.add_argument("name", choices=ADAPTERS.names(), help="the collection's adapter")
    p.add_argument("root", help="the collection's root folder, as downloaded")
    p.add_argument("--labels", help="dicom_folder: CSV with file,label[,severity,source]")
    p.add_argument("--salt", help="dicom_folder: replace patient ids by a salted hash")
    p.add_argument("--uncertain", choices=["ones", "zeros", "ignore"], help="chexpert, mimic_cxr: uncertain (-1) "
                   "labels as 1 (U-Ones, default), 0 (U-Zeros) or unknown (U-Ignore)")
    p.add_argument("--views", choices=["frontal", "all"], help="chexpert, mimic_cxr: frontal images (default) "
                   "or all")
    p.add_argument("--masks", help="chexmask: the CheXmask CSV (OriginalResolution) of this collection")
    p.add_argument("--min-dice", type=float, help="chexmask: masks with a lower RCA Dice are flagged and their "
                   "rows quarantined by the sweep (default 0.7)")
    args = p.parse_args(argv)
    opts = {k: v for k, v in (("labels", args.labels), ("salt", args.salt), ("uncertain", args.uncertain),
                              ("views", args.views), ("masks", args.masks), ("min_dice", args.min_dice))
            if v is not None}
    try:
        if not Path(args.root).is_dir():
            raise UserError(f"{args.root}: not a folder (the collection's root, as downloaded)")
        print(convert(args.name, args.root, **opts))
    except UserError as exc:  # bad input: one line, exit 2; a bug keeps its traceback
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
