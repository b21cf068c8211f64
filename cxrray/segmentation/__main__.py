"""``python -m cxrray.segmentation {train,evaluate,fill,check}``: train the lung U-Net (held-out Dice per source,
then a refit on every mask), score it on a masked set from other sites, fill in missing masks, or check that
every supplied mask belongs to its image (the U-Net's lungs of the image against the mask)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _start_ray() -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, logging_level=logging.WARNING)


def _print_summary(summary, what: str) -> None:
    import polars as pl

    cols = ["source", "images", "lung_dice", "lung_jaccard", "agreement", "poor", "gate_hits", "good_flagged"]
    with pl.Config(tbl_rows=50, tbl_cols=20, float_precision=3):
        print(summary.select(cols))
    row = summary.filter(pl.col("source") == "all").row(0, named=True)
    print(f"{what}: mean lung Dice {row['lung_dice']:.4f} on {row['images']} images; the quality gate flagged "
          f"{row['gate_hits']} of {row['poor']} poor masks (Dice < 0.90) and {row['good_flagged']} of "
          f"{row['images'] - row['poor']} good ones")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxrray.segmentation", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fit on 2/3 of the masked patients, score the rest, refit on every mask")
    t.add_argument("manifest", help="manifest whose rows with a mask_path train the U-Net")
    t.add_argument("--out", required=True, help="folder for unet.pt, seg_config.json and the held-out metrics")
    t.add_argument("--size", type=int, default=128, help="training resolution (px, divisible by 16)")
    t.add_argument("--epochs", type=int, default=70, help="epochs of each fit")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights, augmentation and patient split")
    t.add_argument("--no-refit", action="store_true", help="keep the held-out model as unet.pt")
    t.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (DDP)")
    t.add_argument("--gpu", action="store_true", help="train on GPUs")
    e = sub.add_parser("evaluate", help="score a trained U-Net on a masked manifest (sites it never saw)")
    e.add_argument("manifest", help="manifest whose rows with a mask_path are scored (per source)")
    e.add_argument("model", help="unet.pt written by 'train' (seg_config.json beside it)")
    e.add_argument("--out", required=True, help="folder for eval_metrics.csv and eval_summary.csv")
    f = sub.add_parser("fill", help="predict masks for rows without one; write a new manifest")
    f.add_argument("manifest", help="manifest whose rows without a mask_path get a predicted mask")
    f.add_argument("model", help="unet.pt written by 'train' (seg_config.json beside it)")
    f.add_argument("--out", required=True, help="folder for the masks and the filled manifest.csv")
    f.add_argument("--dilate", type=int, default=0, help="grow predicted masks by this many pixels")
    f.add_argument("--batch-size", type=int, default=16, help="images per U-Net batch")
    f.add_argument("--concurrency", type=int, default=1, help="U-Net actors predicting in parallel")
    c = sub.add_parser("check", help="flag supplied masks that disagree with the U-Net's lungs of their image; "
                       "write the manifest without them")
    c.add_argument("manifest", help="manifest whose rows with a mask_path are checked")
    c.add_argument("model", help="unet.pt written by 'train' (seg_config.json beside it)")
    c.add_argument("--out", required=True, help="folder for mask_check.csv, quarantine.csv and manifest.csv")
    c.add_argument("--min-dice", type=float, default=None, help="lung Dice below which a mask is flagged "
                   "(default: cxrray.segmentation.maskcheck.MASK_DICE)")
    args = p.parse_args(argv)
    if args.cmd == "check":  # no Ray: one process scores the masks
        from cxrray.segmentation.maskcheck import MASK_DICE, check_masks

        check_masks(args.manifest, args.model, args.out, MASK_DICE if args.min_dice is None else args.min_dice)
        return 0
    _start_ray()
    if args.cmd == "train":
        from cxrray.segmentation.job import summarise, train_segmenter
        from cxrray.segmentation.train import SegConfig

        per_image = train_segmenter(args.manifest, args.out, SegConfig(size=args.size, epochs=args.epochs,
                                                                       seed=args.seed),
                                    num_workers=args.num_workers, use_gpu=args.gpu, refit=not args.no_refit)
        _print_summary(summarise(per_image), "held-out patients")
    elif args.cmd == "evaluate":
        from cxrray.segmentation.job import evaluate_segmenter

        _print_summary(evaluate_segmenter(args.manifest, args.model, args.out), "evaluation set")
    else:
        from cxrray.segmentation.job import fill_masks

        print(fill_masks(args.manifest, args.model, args.out, dilate=args.dilate, batch_size=args.batch_size,
                         concurrency=args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
