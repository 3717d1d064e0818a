"""``nnUNetv2_convert_btcv6_subset`` and ``nnUNetv2_convert_chaos_mr``: the preprocessed sets in
../shared/data (``image_N.nii.gz`` with ``label_N.nii.gz``; labels 1 liver, 2 right kidney, 3 left
kidney, 4 spleen, per that folder's README).

- abdomen_ct_btcv6: 6 BTCV CT volumes, already windowed to 0..255 by their providers (channel "CT",
  so nnU-Net applies its CT normalisation to these values).
- abdomen_mr_chaos20: 20 CHAOS T2-SPIR MRI volumes (channel "MRI": nnU-Net z-scores per image).

    nnUNetv2_convert_btcv6_subset -i ../shared/data/abdomen_ct_btcv6 -d 601
    nnUNetv2_convert_chaos_mr -i ../shared/data/abdomen_mr_chaos20 -d 602
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_diffusion_pretrain.cli.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.conversion_cli import (conversion_parser, require_folder,
                                                                        run_conversion)
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase

LABELS = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}


def find_cases(root: Path, prefix: str) -> list[SourceCase]:
    cases = []
    for image in sorted(root.glob("image_*.nii.gz"), key=lambda p: int(re.findall(r"\d+", p.name)[0])):
        number = int(re.findall(r"\d+", image.name)[0])
        cases.append(SourceCase(f"{prefix}_{number:03d}", (str(image),), str(root / f"label_{number}.nii.gz")))
    return cases


def _main(default_id: int, name: str, prefix: str, channel: str, description: str, reference: str,
          license_text: str) -> int:
    args = conversion_parser(__doc__, default_id, name, has_unlabeled=False).parse_args()
    root = require_folder(args.i, f"the {name} folder of ../shared/data")
    return run_conversion(args, find_cases(root, prefix), LABELS, {"0": channel}, description, reference,
                          license_text)


@exits_cleanly_on_user_errors
def main_btcv6() -> int:
    return _main(601, "BTCV6Subset", "btcv", "CT", "6 BTCV abdominal CT volumes, windowed to 0..255 and cropped by "
                 "the SSL-ALPNet authors; 4 organs", "https://www.synapse.org/#!Synapse:syn3193805",
                 "BTCV data-use terms")


@exits_cleanly_on_user_errors
def main_chaos() -> int:
    return _main(602, "CHAOSMR", "chaos", "MRI", "20 CHAOS T2-SPIR abdominal MRI volumes (SSL-ALPNet normalised "
                 "form); 4 organs", "https://chaos.grand-challenge.org/", "CC BY-SA 4.0")
