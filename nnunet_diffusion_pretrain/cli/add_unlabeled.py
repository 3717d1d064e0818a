"""``nnUNetv2_diffusion_add_unlabeled``: preprocess unlabeled scans into a dataset's pretraining pool.

Each scan is reoriented to the labelled cases' orientation, converted with ``--window`` if given,
and checked against the labelled cases after the dataset's normalisation (clipped fraction, median
intensity); a scan unlike them is refused unless ``--allow-mismatch``. ``pool.json`` records every
scan's figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.pool.hu_window import hu_window
from nnunet_diffusion_pretrain.planned_dataset import load_planned_dataset
from nnunet_diffusion_pretrain.pool.unlabeled_pool import add_unlabeled_to_pool


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True, help="dataset name or ID (must be planned by nnU-Net)")
    parser.add_argument("-c", nargs="+", default=["2d"], help="configuration(s) to preprocess for; default 2d")
    parser.add_argument("-i", required=True, type=Path,
                        help="folder of images (NIfTI, NRRD, MHA; _0000 channel suffixes allowed) and/or of "
                             "DICOM series (one series per folder); no label files")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier; default nnUNetPlans")
    parser.add_argument("-np", type=int, default=1, help="number of worker processes; default 1")
    parser.add_argument("--on-error", choices=("abort", "skip"), default="abort",
                        help="a case that cannot be read or is refused: abort (default; nothing of this run enters "
                             "the pool) or skip (the others go in)")
    parser.add_argument("--window", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="convert Hounsfield-unit scans into a windowed dataset's representation: clip to "
                             "[LO, HI] HU and map onto --window-output (e.g. --window -125 275)")
    parser.add_argument("--window-output", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="the range the labelled data is stored in; default 0 255 when it lies in that range")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="take scans that the pool checks find unlike the labelled cases (with a warning)")
    args = parser.parse_args()
    failed = False
    for configuration in args.c:
        dataset = load_planned_dataset(args.d, configuration, args.p)
        window = hu_window(*args.window, args.window_output, dataset.plans_manager) if args.window else None
        report = add_unlabeled_to_pool(dataset, args.i, args.np, args.on_error, window, args.allow_mismatch)
        for message in report.errors:
            print(f"ERROR: {message}", file=sys.stderr)
        for message in report.warnings:
            print(f"WARNING: {message}", file=sys.stderr)
        for message in report.duplicates:
            print(f"skipped: {message}")
        if not report.committed:
            print(f"{configuration}: nothing added to {report.pool_folder} because {len(report.errors)} case(s) "
                  f"failed (--on-error abort); the readable cases stay staged and are reused on the next run",
                  file=sys.stderr)
            failed = True
            continue
        print(f"{configuration}: added {len(report.added)} case(s), skipped {len(report.duplicates)} already "
              f"present, {len(report.errors)} unreadable or refused; pool {report.pool_folder} holds "
              f"{report.disk_bytes / 2**20:.1f} MiB")
    return 1 if failed else 0
