"""``nnUNetv2_convert_btcv6_subset`` and ``nnUNetv2_convert_chaos_mr``: the preprocessed sets in
../shared/data (``image_N.nii.gz`` with ``label_N.nii.gz``; labels 1 liver, 2 right kidney, 3 left
kidney, 4 spleen, per that folder's README).

- abdomen_ct_btcv6: 6 BTCV CT volumes, already windowed to 0..255 by their providers (channel "CT",
  so nnU-Net applies its CT normalisation to these values). Their headers say LPS, but the providers
  flipped the rows (posterior at the top of each slice) without updating them: the converted
  images get the direction their voxels are in (LAS), so that scans in other orientations are
  reoriented correctly when they join the pretraining pool. The arrays stay as they are.
- abdomen_mr_chaos20: 20 CHAOS T2-SPIR MRI volumes (channel "MRI": nnU-Net z-scores per image).

    nnUNetv2_convert_btcv6_subset -i ../shared/data/abdomen_ct_btcv6 -d 601
    nnUNetv2_convert_chaos_mr -i ../shared/data/abdomen_mr_chaos20 -d 602
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.conversion_cli import (conversion_parser, require_folder,
                                                                        run_conversion)
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase

LABELS = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}


BTCV6_DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # LAS: rows run posterior to anterior


def find_cases(root: Path, prefix: str, direction: tuple[float, ...] | None = None) -> list[SourceCase]:
    cases = []
    for image in sorted(root.glob("image_*.nii.gz"), key=lambda p: int(re.findall(r"\d+", p.name)[0])):
        number = int(re.findall(r"\d+", image.name)[0])
        cases.append(SourceCase(f"{prefix}_{number:03d}", (str(image),), str(root / f"label_{number}.nii.gz"),
                                direction=direction))
    return cases


def _main(default_id: int, name: str, prefix: str, channel: str, description: str, reference: str,
          license_text: str, direction: tuple[float, ...] | None = None) -> int:
    args = conversion_parser(__doc__, default_id, name, has_unlabeled=False).parse_args()
    root = require_folder(args.i, f"the {name} folder of ../shared/data")
    return run_conversion(args, find_cases(root, prefix, direction), LABELS, {"0": channel}, description, reference,
                          license_text)


@exits_cleanly_on_user_errors
def main_btcv6() -> int:
    return _main(601, "BTCV6Subset", "btcv", "CT", "6 BTCV abdominal CT volumes, windowed to 0..255 and cropped by "
                 "the SSL-ALPNet authors; 4 organs", "https://www.synapse.org/#!Synapse:syn3193805",
                 "BTCV data-use terms", BTCV6_DIRECTION)


@exits_cleanly_on_user_errors
def main_chaos() -> int:
    return _main(602, "CHAOSMR", "chaos", "MRI", "20 CHAOS T2-SPIR abdominal MRI volumes (SSL-ALPNet normalised "
                 "form); 4 organs", "https://chaos.grand-challenge.org/", "CC BY-SA 4.0")
