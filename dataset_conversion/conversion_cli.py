"""The command-line frame every converter shares: arguments, summary, next steps."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import (SourceCase, link_unlabeled,
                                                                            write_raw_dataset)
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.phantom import raw_dataset_folder


def conversion_parser(description: str, default_id: int, default_name: str, has_unlabeled: bool
                      ) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", required=True, type=Path, help="the download, unpacked as its providers ship it")
    parser.add_argument("-d", type=int, default=default_id, help=f"nnU-Net dataset ID; default {default_id}")
    parser.add_argument("--name", default=default_name, help=f"dataset name; default {default_name}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                        help="a case that cannot be read or fails a check: stop (default; nothing is written) or "
                             "skip it and convert the rest")
    parser.add_argument("-np", type=int, default=4, help="worker processes; default 4")
    if has_unlabeled:
        parser.add_argument("-u", "--unlabeled-output", type=Path, default=None,
                            help="gather the unlabeled scans into this folder (symbolic links) for "
                                 "nnUNetv2_diffusion_add_unlabeled")
        parser.add_argument("--copy-unlabeled", action="store_true", help="copy instead of linking")
    return parser


def require_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserFacingError(f"{path} does not exist; expected {what}")
    return path


def run_conversion(args: argparse.Namespace, cases: list[SourceCase], labels: dict[str, int],
                   channel_names: dict[str, str], description: str, reference: str, license_text: str,
                   unlabeled: list[tuple[str, str]] | None = None) -> int:
    if not cases:
        raise UserFacingError(f"no labelled cases found under {args.i}; see the command's --help for the layout")
    target = raw_dataset_folder(args.d, args.name)
    report = write_raw_dataset(cases, target, labels, channel_names, description, reference, license_text,
                               args.overwrite, args.on_error, args.np)
    for message in report.skipped:
        print(f"SKIPPED: {message}", file=sys.stderr)
    print(f"{target}: {len(report.converted)} training cases"
          + (f", {len(report.test_cases)} test cases (imagesTs/labelsTs)" if report.test_cases else "")
          + (f", {len(report.skipped)} skipped" if report.skipped else ""))
    print("next: nnUNetv2_plan_and_preprocess -d {0} -c 2d 3d_fullres --verify_dataset_integrity".format(args.d))
    if unlabeled:
        if getattr(args, "unlabeled_output", None):
            link_unlabeled(unlabeled, args.unlabeled_output, args.copy_unlabeled)
            print(f"{len(unlabeled)} unlabeled scans in {args.unlabeled_output}; next: "
                  f"nnUNetv2_diffusion_add_unlabeled -d {args.d} -c 2d -i {args.unlabeled_output}")
        else:
            print(f"{len(unlabeled)} unlabeled scans found; pass -u FOLDER to gather them for the pretraining pool")
    print(f"then: nnUNetv2_train {args.d} 2d all -tr nnUNetTrainerDiffusionPretrain")
    return 0
