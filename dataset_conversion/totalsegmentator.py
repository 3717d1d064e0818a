"""``nnUNetv2_convert_totalsegmentator``: TotalSegmentator CT, a chosen subset of structures merged
into one label map.

Download: https://zenodo.org/records/10047292 (Totalsegmentator_dataset_v201.zip). Expected layout:

    Totalsegmentator_dataset/meta.csv                          (';'-separated: image_id, ..., split)
    Totalsegmentator_dataset/s0000/ct.nii.gz
    Totalsegmentator_dataset/s0000/segmentations/liver.nii.gz  (one binary mask per structure)

``--structures`` picks the masks and their label values (in the order given, from 1); presets:
``flare22`` (the 13 FLARE22 organs with FLARE22's label values, the default) and ``btcv6`` (liver,
right kidney, left kidney, spleen, as in ../shared/data). Overlaps: where masks overlap, the
structure with fewer voxels in that case wins (small organs are not swallowed by large neighbours);
ties go to the lower label value. Cases whose meta.csv split is "test" go to imagesTs/labelsTs.

    nnUNetv2_convert_totalsegmentator -i /data/Totalsegmentator_dataset -d 506 --structures flare22
"""
from __future__ import annotations

import csv
from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.dataset_conversion.conversion_cli import (conversion_parser, require_folder,
                                                                        run_conversion)
from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase

PRESETS = {
    "flare22": ["liver", "kidney_right", "spleen", "pancreas", "aorta", "inferior_vena_cava", "adrenal_gland_right",
                "adrenal_gland_left", "gallbladder", "esophagus", "stomach", "duodenum", "kidney_left"],
    "btcv6": ["liver", "kidney_right", "kidney_left", "spleen"],
}


def read_splits(root: Path) -> dict[str, str]:
    meta = root / "meta.csv"
    if not meta.is_file():
        return {}
    with open(meta, newline="") as f:
        return {row["image_id"]: row.get("split", "train") for row in csv.DictReader(f, delimiter=";")}


def find_cases(root: Path, structures: list[str]) -> list[SourceCase]:
    splits = read_splits(root)
    cases = []
    for subject in sorted(d for d in root.iterdir() if d.is_dir() and (d / "ct.nii.gz").exists()):
        masks = tuple((value, str(subject / "segmentations" / f"{name}.nii.gz"))
                      for value, name in enumerate(structures, start=1))
        cases.append(SourceCase(subject.name, (str(subject / "ct.nii.gz"),), masks=masks,
                                test=splits.get(subject.name) == "test"))
    return cases


@exits_cleanly_on_user_errors
def main() -> int:
    parser = conversion_parser(__doc__, 506, "TotalSegmentatorOrgans", has_unlabeled=False)
    parser.add_argument("--structures", nargs="+", default=["flare22"],
                        help="a preset (flare22, btcv6) or TotalSegmentator mask names, e.g. liver spleen")
    args = parser.parse_args()
    structures = PRESETS[args.structures[0]] if len(args.structures) == 1 and args.structures[0] in PRESETS \
        else args.structures
    labels = {"background": 0, **{name: value for value, name in enumerate(structures, start=1)}}
    return run_conversion(args, find_cases(require_folder(args.i, "the unpacked Totalsegmentator_dataset"),
                                           structures), labels, {"0": "CT"},
                          f"TotalSegmentator CT, structures {', '.join(structures)} merged (overlaps: smaller "
                          f"structure wins) by nnunet_diffusion_pretrain", "https://zenodo.org/records/10047292",
                          "CC BY 4.0")
