"""``nnUNetv2_diffusion_pool_preview``: a PNG of random pretraining patches exactly as the pretraining
trainer receives them, the labelled cases and each unlabeled source in a row of its own, titled
with each source's clipped fraction (see ``nnUNetv2_diffusion_add_unlabeled``).

    nnUNetv2_diffusion_pool_preview -d 601 -c 2d -o pool_preview.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.planned_dataset import load_planned_dataset
from nnunet_diffusion_pretrain.diffusion.pool_preview import preview_rows, write_preview


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True, help="dataset name or ID (must be planned by nnU-Net)")
    parser.add_argument("-c", default="2d", help="configuration; default 2d")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier; default nnUNetPlans")
    parser.add_argument("-o", required=True, type=Path, help="PNG file to write")
    parser.add_argument("-n", type=int, default=6, help="patches per source; default 6")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patch draw; default 0")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    args = parser.parse_args()
    if args.o.exists() and not args.overwrite:
        raise UserFacingError(f"{args.o} exists already; choose another -o or pass --overwrite")
    if args.n < 1:
        raise UserFacingError(f"-n {args.n}: at least one patch per source")
    dataset = load_planned_dataset(args.d, args.c, args.p)
    rows = preview_rows(dataset, args.n, args.seed)
    args.o.parent.mkdir(parents=True, exist_ok=True)
    write_preview(rows, args.o, f"{dataset.name} {dataset.configuration}: pretraining patches as the trainer "
                                f"receives them (one intensity window)")
    print(f"{len(rows)} source(s), {args.n} patch(es) each, written to {args.o}")
    return 0
