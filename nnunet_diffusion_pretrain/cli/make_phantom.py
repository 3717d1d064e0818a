"""``nnUNetv2_diffusion_make_phantom``: write the built-in CT-like phantom as an nnU-Net raw dataset."""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.phantom import DEFAULT_SHAPE, raw_dataset_folder, write_phantom_dataset


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-d", type=int, default=990, help="dataset ID; default 990")
    parser.add_argument("--name", default="DiffusionPhantom", help="dataset name; default DiffusionPhantom")
    parser.add_argument("-n", type=int, default=12, help="labelled volumes; default 12")
    parser.add_argument("-u", "--unlabeled-output", type=Path, default=None,
                        help="also write unlabeled scans into this folder")
    parser.add_argument("--num-unlabeled", type=int, default=16, help="unlabeled volumes; default 16")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("Z", "Y", "X"),
                        help=f"volume size in voxels; default {' '.join(map(str, DEFAULT_SHAPE))}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    args = parser.parse_args()
    folder = raw_dataset_folder(args.d, args.name)
    write_phantom_dataset(folder, args.n, args.unlabeled_output, args.num_unlabeled if args.unlabeled_output else 0,
                          seed=args.seed, shape=tuple(args.shape), overwrite=args.overwrite)
    print(f"wrote {folder}" + (f" and {args.unlabeled_output}" if args.unlabeled_output else ""))
    return 0
