"""``nnUNetv2_diffusion_env``: print the shell line that lets stock nnU-Net find our trainers."""
from __future__ import annotations

import argparse
import os
import shlex

from nnunet_diffusion_pretrain.subprocess_steps import ext_trainer_folder


def main() -> int:
    parser = argparse.ArgumentParser(description="Print the export line for nnUNet_extTrainer. "
                                                 "Use: eval \"$(nnUNetv2_diffusion_env)\"")
    parser.parse_args()
    folders = [f for f in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if f]
    if ext_trainer_folder() not in folders:
        folders.append(ext_trainer_folder())
    print(f"export nnUNet_extTrainer={shlex.quote(os.pathsep.join(folders))}")
    return 0
