"""``nnUNetv2_convert_flare22``: MICCAI FLARE 2022 (abdominal organ segmentation, the paper's dataset).

Download: https://flare22.grand-challenge.org/ (Zenodo / Baidu links on the Dataset page). Expected
layout, as shipped (folder names may carry version suffixes; they are found by these patterns):

    FLARE22/
      FLARE22_LabeledCase50/images/FLARE22_Tr_0001_0000.nii.gz ... (50)
      FLARE22_LabeledCase50/labels/FLARE22_Tr_0001.nii.gz ...
      FLARE22_UnlabeledCase1-1000/Case_00001_0000.nii.gz ...
      FLARE22_UnlabeledCase1001-2000/Case_01001_0000.nii.gz ...
      (optional) *Validation* or *Tuning* folders with images/ and labels/ (labelled validation
      cases, e.g. FLARE22_Ts_0001_0000.nii.gz) -> imagesTs/labelsTs

Labels (FLARE22 documentation): 1 liver, 2 right kidney, 3 spleen, 4 pancreas, 5 aorta, 6 inferior
vena cava, 7 right adrenal gland, 8 left adrenal gland, 9 gallbladder, 10 esophagus, 11 stomach,
12 duodenum, 13 left kidney.

    nnUNetv2_convert_flare22 -i /data/FLARE22 -d 501 -u /data/FLARE22_unlabeled
"""
from __future__ import annotations

from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.conversion_cli import (conversion_parser, require_folder,
                                                                        run_conversion)
from nnunet_diffusion_pretrain.dataset_conversion.folder_layouts import paired_cases
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase
from nnunet_diffusion_pretrain.errors import UserFacingError

LABELS = {"background": 0, "liver": 1, "right_kidney": 2, "spleen": 3, "pancreas": 4, "aorta": 5,
          "inferior_vena_cava": 6, "right_adrenal_gland": 7, "left_adrenal_gland": 8, "gallbladder": 9,
          "esophagus": 10, "stomach": 11, "duodenum": 12, "left_kidney": 13}


def find_cases(root: Path) -> tuple[list[SourceCase], list[tuple[str, str]]]:
    labelled = [d for d in sorted(root.glob("*Label*")) if d.is_dir() and "unlabel" not in d.name.lower()]
    if not labelled:
        raise UserFacingError(f"no FLARE22_LabeledCase* folder in {root}; see nnUNetv2_convert_flare22 --help")
    cases = []
    for folder in labelled:
        cases += paired_cases(require_folder(folder / "images", "FLARE22 images"), folder / "labels", "_0000.nii.gz",
                              lambda stem: f"{stem}.nii.gz", lambda stem: stem)
    for folder in sorted(d for pattern in ("*Validation*", "*Tuning*") for d in root.glob(pattern)
                         if (d / "labels").is_dir()):
        cases += paired_cases(folder / "images", folder / "labels", "_0000.nii.gz", lambda stem: f"{stem}.nii.gz",
                              lambda stem: stem, test=True)
    unlabeled = [(f.name[: -len("_0000.nii.gz")], str(f))
                 for d in sorted(root.glob("*Unlabeled*")) if d.is_dir() for f in sorted(d.rglob("*_0000.nii.gz"))]
    return cases, unlabeled


@exits_cleanly_on_user_errors
def main() -> int:
    args = conversion_parser(__doc__, 501, "FLARE22", has_unlabeled=True).parse_args()
    cases, unlabeled = find_cases(require_folder(args.i, "the unpacked FLARE22 download"))
    return run_conversion(args, cases, LABELS, {"0": "CT"}, "FLARE22 abdominal organ segmentation (50 labelled "
                          "CT scans, 13 organs) converted by nnunet_diffusion_pretrain",
                          "https://flare22.grand-challenge.org/", "CC BY-NC-SA 4.0 (see the FLARE22 terms)",
                          unlabeled)
