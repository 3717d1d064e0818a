"""The nnU-Net-style arguments that name a pretraining checkpoint (-c -p -tr -f -chk), shared by
the commands that use a pretrained denoiser outside training."""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_diffusion_pretrain.planned_dataset import PlannedDataset
from nnunet_diffusion_pretrain.diffusion.pretrained_denoiser import PRETRAINER, checkpoint_path


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", default="2d", help="configuration (2d, 3d_fullres, ...); default 2d")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier; default nnUNetPlans")
    parser.add_argument("-tr", default=PRETRAINER, help=f"pretraining trainer; default {PRETRAINER}")
    parser.add_argument("-f", default="all", help="fold the pretraining ran on; default all")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name in the fold folder, or a path")


def resolve_checkpoint(args: argparse.Namespace, dataset: PlannedDataset) -> Path:
    """``-chk`` as a path if it is a file, else the named checkpoint in nnU-Net's results folder."""
    given = Path(args.chk)
    return given if given.is_file() else checkpoint_path(dataset, args.p, args.tr, args.f, args.chk)
