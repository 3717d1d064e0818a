"""``nnUNetv2_convert_btcv``: BTCV, Synapse "Multi-Atlas Labeling Beyond the Cranial Vault", abdomen.

Download: https://www.synapse.org/#!Synapse:syn3193805 (RawData.zip). Expected layout, as shipped:

    RawData/Training/img/img0001.nii.gz ... (30)
    RawData/Training/label/label0001.nii.gz ...
    RawData/Testing/img/img0061.nii.gz ... (20, no labels -> imagesTs)

Labels (BTCV documentation): 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus,
6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal vein and splenic vein, 11 pancreas,
12 right adrenal gland, 13 left adrenal gland.

    nnUNetv2_convert_btcv -i /data/RawData -d 502      (the folder holding Training/ and Testing/)
"""
from __future__ import annotations

from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.conversion_cli import (conversion_parser, require_folder,
                                                                        run_conversion)
from nnunet_diffusion_pretrain.dataset_conversion.folder_layouts import paired_cases
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase

LABELS = {"background": 0, "spleen": 1, "right_kidney": 2, "left_kidney": 3, "gallbladder": 4, "esophagus": 5,
          "liver": 6, "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "portal_and_splenic_vein": 10,
          "pancreas": 11, "right_adrenal_gland": 12, "left_adrenal_gland": 13}


def find_cases(root: Path) -> list[SourceCase]:
    if (root / "RawData").is_dir():
        root = root / "RawData"
    training = require_folder(root / "Training" / "img", "RawData/Training/img")
    cases = paired_cases(training, root / "Training" / "label", ".nii.gz",
                         lambda stem: f"label{stem[3:]}.nii.gz", lambda stem: f"BTCV_{stem[3:]}")
    if (root / "Testing" / "img").is_dir():
        cases += paired_cases(root / "Testing" / "img", None, ".nii.gz", str, lambda stem: f"BTCV_{stem[3:]}",
                              test=True)
    return cases


@exits_cleanly_on_user_errors
def main() -> int:
    args = conversion_parser(__doc__, 502, "BTCV", has_unlabeled=False).parse_args()
    return run_conversion(args, find_cases(require_folder(args.i, "the unpacked RawData folder")), LABELS,
                          {"0": "CT"}, "BTCV multi-atlas abdomen (30 labelled CT scans, 13 organs) converted by "
                          "nnunet_diffusion_pretrain", "https://www.synapse.org/#!Synapse:syn3193805",
                          "see the Synapse BTCV data-use terms")
