"""``nnUNetv2_diffusion_add_unlabeled``: preprocess unlabeled scans into a dataset's pretraining pool."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_diffusion_pretrain.cli.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.planned_dataset import load_planned_dataset
from nnunet_diffusion_pretrain.unlabeled_pool import add_unlabeled_to_pool


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-d", required=True, help="dataset name or ID (must be planned by nnU-Net)")
    parser.add_argument("-c", nargs="+", default=["2d"], help="configuration(s) to preprocess for; default 2d")
    parser.add_argument("-i", required=True, type=Path,
                        help="folder of images (NIfTI, NRRD, MHA; _0000 channel suffixes allowed) and/or of "
                             "DICOM series (one series per folder); no label files")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier; default nnUNetPlans")
    parser.add_argument("-np", type=int, default=1, help="number of worker processes; default 1")
    parser.add_argument("--on-error", choices=("abort", "skip"), default="abort",
                        help="a case that cannot be read: abort (default; nothing of this run enters the pool) "
                             "or skip (the others go in)")
    args = parser.parse_args()
    failed = False
    for configuration in args.c:
        dataset = load_planned_dataset(args.d, configuration, args.p)
        report = add_unlabeled_to_pool(dataset, args.i, args.np, args.on_error)
        for message in report.errors:
            print(f"ERROR: {message}", file=sys.stderr)
        for message in report.duplicates:
            print(f"skipped: {message}")
        if not report.committed:
            print(f"{configuration}: nothing added to {report.pool_folder} because {len(report.errors)} case(s) "
                  f"failed (--on-error abort); the readable cases stay staged and are reused on the next run",
                  file=sys.stderr)
            failed = True
            continue
        print(f"{configuration}: added {len(report.added)} case(s), skipped {len(report.duplicates)} already "
              f"present, {len(report.errors)} unreadable; pool {report.pool_folder} holds "
              f"{report.disk_bytes / 2**20:.1f} MiB")
    return 1 if failed else 0
