"""Every converter on a small synthetic folder with its dataset's exact layout, file names and label
coding, through its console command; then nnU-Net's own integrity check on the result. The real
sets in ../shared/data are converted too (skipped where absent)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_DATA, command, run

SPACING, ORIGIN = (0.78, 0.78, 2.5), (-120.5, -80.25, 33.0)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # LPS-flipped, as many scanners write
SHAPE = (6, 14, 14)


def write_volume(path: Path, array: np.ndarray, spacing=SPACING) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path), True)


def ct(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(40, 200, SHAPE).astype(np.int16)


def label(seed: int, max_label: int) -> np.ndarray:
    """Blocks of every label value 1..max_label (some cases miss some organs, as real ones do)."""
    out = np.zeros(SHAPE, np.uint8)
    values = np.random.default_rng(seed).permutation(np.arange(1, max_label + 1))
    for i, v in enumerate(values):
        z, y = i % SHAPE[0], (i // SHAPE[0]) * 3 % (SHAPE[1] - 3)
        out[z, y:y + 3, 2:9] = v
    return out


def layout_flare22(root: Path) -> None:
    for i in (1, 2, 3):
        write_volume(root / "FLARE22_LabeledCase50" / "images" / f"FLARE22_Tr_{i:04d}_0000.nii.gz", ct(i))
        write_volume(root / "FLARE22_LabeledCase50" / "labels" / f"FLARE22_Tr_{i:04d}.nii.gz", label(i, 13))
    for i in (1, 2):
        write_volume(root / "FLARE22_UnlabeledCase1-1000" / f"Case_{i:05d}_0000.nii.gz", ct(100 + i))
    write_volume(root / "FLARE22_UnlabeledCase1001-2000" / "Case_01001_0000.nii.gz", ct(200))
    write_volume(root / "FLARE22_ValidationCase50" / "images" / "FLARE22_Ts_0001_0000.nii.gz", ct(300))
    write_volume(root / "FLARE22_ValidationCase50" / "labels" / "FLARE22_Ts_0001.nii.gz", label(300, 13))


def layout_btcv(root: Path) -> None:
    for i in (1, 2, 3):
        write_volume(root / "RawData" / "Training" / "img" / f"img{i:04d}.nii.gz", ct(i))
        write_volume(root / "RawData" / "Training" / "label" / f"label{i:04d}.nii.gz", label(i, 13))
    write_volume(root / "RawData" / "Testing" / "img" / "img0061.nii.gz", ct(61))


AMOS_NAMES = ["background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver", "stomach",
              "aorta", "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder",
              "prostate/uterus"]


def layout_amos22(root: Path) -> None:
    entries = {"training": [], "validation": []}
    for split, images, labels, numbers in (("training", "imagesTr", "labelsTr", (1, 2, 507)),
                                           ("validation", "imagesVa", "labelsVa", (8,))):
        for n in numbers:
            write_volume(root / images / f"amos_{n:04d}.nii.gz", ct(n))
            write_volume(root / labels / f"amos_{n:04d}.nii.gz", label(n, 15))
            entries[split].append({"image": f"./{images}/amos_{n:04d}.nii.gz",
                                   "label": f"./{labels}/amos_{n:04d}.nii.gz"})
    write_volume(root / "imagesTs" / "amos_0009.nii.gz", ct(9))
    (root / "dataset.json").write_text(json.dumps({
        "name": "AMOS", "modality": {"0": "CT"}, "labels": {str(i): n for i, n in enumerate(AMOS_NAMES)},
        "numTraining": 3, "numValidation": 1, **entries, "test": ["./imagesTs/amos_0009.nii.gz"]}))


def layout_word(root: Path) -> None:
    for sub_i, sub_l, numbers in (("imagesTr", "labelsTr", (1, 2, 3)), ("imagesVal", "labelsVal", (101,)),
                                  ("imagesTs", "labelsTs", (121,))):
        for n in numbers:
            write_volume(root / sub_i / f"word_{n:04d}.nii.gz", ct(n))
            write_volume(root / sub_l / f"word_{n:04d}.nii.gz", label(n, 16))


def layout_abdomenct1k(root: Path) -> None:
    for part, numbers in (("AbdomenCT-1K-ImagePart1", (1, 2)), ("AbdomenCT-1K-ImagePart2", (3,))):
        for n in numbers:
            write_volume(root / part / f"Case_{n:05d}_0000.nii.gz", ct(n))
            write_volume(root / "Mask" / f"Case_{n:05d}.nii.gz", label(n, 4))
    write_volume(root / "AbdomenCT-1K-ImagePart3" / "Case_01001_0000.nii.gz", ct(1001))  # no mask: unlabeled


TOTALSEG_FLARE = ["liver", "kidney_right", "spleen", "pancreas", "aorta", "inferior_vena_cava",
                  "adrenal_gland_right", "adrenal_gland_left", "gallbladder", "esophagus", "stomach", "duodenum",
                  "kidney_left"]


def layout_totalsegmentator(root: Path) -> None:
    rows = ["image_id;age;gender;institute;study_type;split"]
    for n, split in ((0, "train"), (1, "val"), (2, "test")):
        subject = root / f"s{n:04d}"
        write_volume(subject / "ct.nii.gz", ct(n))
        for value, name in enumerate(TOTALSEG_FLARE, start=1):
            mask = (label(n, 13) == value).astype(np.uint8)
            if name == "liver":
                mask[:, :, :] = 0
                mask[:, 0:10, 0:13] = 1  # a large liver that overlaps the gallbladder below
            if name == "gallbladder":
                mask[2, 4:6, 10:12] = 1  # outside every other block (columns 2:9), inside the liver
            write_volume(subject / "segmentations" / f"{name}.nii.gz", mask)
        rows.append(f"s{n:04d};60;m;A;ct abdomen;{split}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")


CONVERTERS = {
    # command, layout, dataset id, expected labels (name -> value) sample, training cases, test cases, unlabeled
    "flare22": ("nnUNetv2_convert_flare22", layout_flare22, 701, {"liver": 1, "spleen": 3, "left_kidney": 13}, 3, 1, 3),
    "btcv": ("nnUNetv2_convert_btcv", layout_btcv, 702, {"spleen": 1, "liver": 6, "left_adrenal_gland": 13}, 3, 1, 0),
    "amos22": ("nnUNetv2_convert_amos22", layout_amos22, 703, {"spleen": 1, "postcava": 9, "prostate_uterus": 15},
               2, 1, 0),
    "word": ("nnUNetv2_convert_word", layout_word, 704, {"liver": 1, "rectum": 13, "head_of_femur_r": 16}, 3, 2, 0),
    "abdomenct1k": ("nnUNetv2_convert_abdomenct1k", layout_abdomenct1k, 705,
                    {"liver": 1, "kidney": 2, "pancreas": 4}, 3, 0, 1),
    "totalsegmentator": ("nnUNetv2_convert_totalsegmentator", layout_totalsegmentator, 706,
                         {"liver": 1, "gallbladder": 9, "kidney_left": 13}, 2, 1, 0),
}


@pytest.mark.parametrize("name", list(CONVERTERS))
def test_converter_on_the_providers_layout(nnunet_env, tmp_path, name):
    cmd, layout, dataset_id, labels, n_train, n_test, n_unlabeled = CONVERTERS[name]
    source = tmp_path / "download"
    layout(source)
    unlabeled = tmp_path / "unlabeled"
    extra = ["-u", str(unlabeled)] if n_unlabeled else []
    result = run([command(cmd), "-i", str(source), "-d", str(dataset_id), "-np", "1", *extra], nnunet_env)
    target = next(Path(nnunet_env["nnUNet_raw"]).glob(f"Dataset{dataset_id}_*"))
    dataset_json = json.loads((target / "dataset.json").read_text())
    assert dataset_json["numTraining"] == n_train and dataset_json["channel_names"] == {"0": "CT"}
    for organ, value in labels.items():
        assert dataset_json["labels"][organ] == value
    assert len(list((target / "imagesTr").glob("*_0000.nii.gz"))) == n_train
    assert len(list((target / "labelsTr").glob("*.nii.gz"))) == n_train
    assert len(list((target / "imagesTs").glob("*.nii.gz"))) == n_test if n_test else not (target / "imagesTs").exists()
    for image_file in (target / "imagesTr").glob("*.nii.gz"):
        image = sitk.ReadImage(str(image_file))
        assert np.allclose(image.GetSpacing(), SPACING) and np.allclose(image.GetOrigin(), ORIGIN)
        assert np.allclose(image.GetDirection(), DIRECTION)
        seg = sitk.ReadImage(str(target / "labelsTr" / image_file.name.replace("_0000.nii.gz", ".nii.gz")))
        assert np.allclose(seg.GetOrigin(), ORIGIN) and np.allclose(seg.GetDirection(), DIRECTION)
        assert set(np.unique(sitk.GetArrayFromImage(seg))) <= set(dataset_json["labels"].values())
    if n_unlabeled:
        assert len(list(unlabeled.iterdir())) == n_unlabeled
        assert f"nnUNetv2_diffusion_add_unlabeled -d {dataset_id}" in result.stdout
    run([command("nnUNetv2_extract_fingerprint"), "-d", str(dataset_id), "--verify_dataset_integrity", "-np", "1"],
        nnunet_env)
    if name == "amos22":
        assert "skipping 1 MRI cases" in result.stdout
    if name == "totalsegmentator":  # the small gallbladder wins where it overlaps the large liver
        merged = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / "s0000.nii.gz")))
        assert (merged[2, 4:6, 10:12] == 9).all() and merged[0, 0, 12] == 1


def test_geometry_mismatch_stops_or_is_skipped_and_existing_datasets_are_kept(nnunet_env, tmp_path):
    source = tmp_path / "download"
    layout_btcv(source)
    write_volume(source / "RawData" / "Training" / "label" / "label0002.nii.gz", label(2, 13), spacing=(1, 1, 1))
    (source / "RawData" / "Training" / "img" / "img0003.nii.gz").write_bytes(b"not an image")
    btcv = [command("nnUNetv2_convert_btcv"), "-i", str(source), "-d", "707", "-np", "1"]
    stopped = run(btcv, nnunet_env, check=False)
    (error,) = [line for line in stopped.stderr.splitlines() if line.startswith("ERROR: ")]
    assert stopped.returncode == 1
    assert "img0003.nii.gz: cannot be read" in error or "label0002.nii.gz: spacing" in error
    assert not list(Path(nnunet_env["nnUNet_raw"]).glob("*Dataset707_*")), "nothing may be written on stop"
    skipped = run(btcv + ["--on-error", "skip"], nnunet_env)
    assert "1 training cases" in skipped.stdout and "1 test cases" in skipped.stdout
    assert "SKIPPED: " in skipped.stderr and "label0002.nii.gz: spacing (1.0, 1.0, 1.0) differs" in skipped.stderr
    assert "img0003.nii.gz: cannot be read" in skipped.stderr
    target = Path(nnunet_env["nnUNet_raw"]) / "Dataset707_BTCV"
    before = sorted(p.name for p in (target / "imagesTr").iterdir())
    again = run(btcv + ["--on-error", "skip"], nnunet_env, check=False)
    assert again.returncode == 1 and "already exists; pass --overwrite" in again.stderr
    assert sorted(p.name for p in (target / "imagesTr").iterdir()) == before


def test_unlabeled_folder_with_dicom_series_becomes_nifti(nnunet_env, tmp_path):
    from test_unlabeled_pool import _write_dicom_series
    _write_dicom_series(np.round(np.random.default_rng(0).normal(0, 100, (5, 16, 16))), tmp_path / "in" / "pat1",
                        "1.2.3.9")
    write_volume(tmp_path / "in" / "scan two.nii.gz", ct(5))
    run([command("nnUNetv2_convert_unlabeled"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")], nnunet_env)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pat1_0000.nii.gz", "scan_two_0000.nii.gz"]
    assert sitk.ReadImage(str(tmp_path / "out" / "pat1_0000.nii.gz")).GetSize() == (16, 16, 5)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real scans not available at {SHARED_DATA}")
@pytest.mark.parametrize("cmd, folder, dataset_id, n", [
    ("nnUNetv2_convert_btcv6_subset", "abdomen_ct_btcv6", 711, 6),
    ("nnUNetv2_convert_chaos_mr", "abdomen_mr_chaos20", 712, 20),
])
def test_real_shared_sets_convert_and_pass_the_integrity_check(nnunet_env, cmd, folder, dataset_id, n):
    run([command(cmd), "-i", str(SHARED_DATA / folder), "-d", str(dataset_id), "-np", "2"], nnunet_env)
    target = next(Path(nnunet_env["nnUNet_raw"]).glob(f"Dataset{dataset_id}_*"))
    dataset_json = json.loads((target / "dataset.json").read_text())
    assert dataset_json["numTraining"] == n
    assert dataset_json["labels"] == {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    source = sitk.ReadImage(str(SHARED_DATA / folder / "image_1.nii.gz" if "chaos" in folder else
                                SHARED_DATA / folder / "image_0.nii.gz"))
    converted = sitk.ReadImage(str(target / "imagesTr" / ("chaos_001_0000.nii.gz" if "chaos" in folder else
                                                           "btcv_000_0000.nii.gz")))
    assert converted.GetSpacing() == source.GetSpacing() and converted.GetOrigin() == source.GetOrigin()
    run([command("nnUNetv2_extract_fingerprint"), "-d", str(dataset_id), "--verify_dataset_integrity", "-np", "2"],
        nnunet_env)
