"""``python -m cxrray.segmentation {train,fill}``: train the lung U-Net, or fill in missing masks."""

from __future__ import annotations

import argparse
import os
import sys

from cxrray.segmentation.train import SegConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxrray.segmentation", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on the rows that have masks; evaluate on held-out patients")
    t.add_argument("manifest")
    t.add_argument("out")
    t.add_argument("--size", type=int, default=128)
    t.add_argument("--epochs", type=int, default=70)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-workers", type=int, default=1)
    t.add_argument("--gpu", action="store_true")
    f = sub.add_parser("fill", help="predict masks for rows without one; write a new manifest")
    f.add_argument("manifest")
    f.add_argument("model", help="unet.pt written by 'train' (seg_config.json beside it)")
    f.add_argument("out")
    f.add_argument("--dilate", type=int, default=0, help="grow predicted masks by this many pixels")
    args = p.parse_args(argv)
    if args.cmd == "train":
        import ray

        from cxrray.segmentation.job import train_segmenter

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, logging_level="WARNING")
        per_image = train_segmenter(args.manifest, args.out, SegConfig(size=args.size, epochs=args.epochs,
                                                                       seed=args.seed),
                                    num_workers=args.num_workers, use_gpu=args.gpu)
        print(open(os.path.join(args.out, "seg_summary.csv")).read())
        print(f"mean lung Dice on {per_image.height} held-out images: {per_image['lung_dice'].mean():.4f}")
    else:
        from cxrray.segmentation.job import fill_masks

        print(fill_masks(args.manifest, args.model, args.out, dilate=args.dilate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
