"""``nnUNetv2_diffusion_add_unlabeled`` through the real command, on real files."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import blosc2
import matplotlib.pyplot as plt
import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import command, run, tree_snapshot
from nnunet_diffusion_pretrain.phantom import DEFAULT_SPACING_XYZ, make_phantom_volume


def add(env, dataset, folder, *extra, check=True):
    return run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", str(dataset), "-i", str(folder), *extra],
               env, check=check)


def pool_dir(env, planned, data_identifier="nnUNetPlans_2d") -> Path:
    return Path(env["nnUNet_diffusion_pool"]) / planned["name"] / data_identifier


@pytest.fixture(scope="module")
def pool_env(nnunet_env, tmp_path_factory):
    """These tests get a pool of their own (nnUNet_diffusion_pool moves it), so test order does not matter."""
    return dict(nnunet_env, nnUNet_diffusion_pool=str(tmp_path_factory.mktemp("pool")))


@pytest.fixture(scope="module")
def filled_pool(pool_env, planned_phantom):
    before = {k: tree_snapshot(planned_phantom[k]) for k in ("raw", "preprocessed")}
    first = add(pool_env, planned_phantom["id"], planned_phantom["unlabeled"], "-c", "2d", "3d_fullres")
    after = {k: tree_snapshot(planned_phantom[k]) for k in ("raw", "preprocessed")}
    return {"first": first, "before": before, "after": after}


def test_pool_is_filled_without_touching_the_labelled_dataset(pool_env, planned_phantom, filled_pool):
    assert filled_pool["before"] == filled_pool["after"], "raw or preprocessed dataset folder changed"
    for identifier in ("nnUNetPlans_2d", "nnUNetPlans_3d_fullres"):
        folder = pool_dir(pool_env, planned_phantom, identifier)
        manifest = json.loads((folder / "pool.json").read_text())
        assert sorted(manifest["cases"]) == [f"unlabeled_scan_{i:03d}" for i in range(4)]
        for case in manifest["cases"]:
            assert (folder / f"{case}.b2nd").is_file() and (folder / f"{case}.pkl").is_file()
            assert not (folder / f"{case}_seg.b2nd").exists(), "no label files in the pool"
    assert "added 4 case(s)" in filled_pool["first"].stdout


def test_rerunning_adds_nothing_twice(pool_env, planned_phantom, filled_pool):
    folder = pool_dir(pool_env, planned_phantom)
    before = tree_snapshot(folder)
    again = add(pool_env, planned_phantom["id"], planned_phantom["unlabeled"], "-c", "2d")
    assert "added 0 case(s), skipped 4 already present" in again.stdout
    assert tree_snapshot(folder) == before


def test_pool_case_is_exactly_nnunets_inference_preprocessing(pool_env, planned_phantom, filled_pool):
    pm = PlansManager(str(planned_phantom["preprocessed"] / "nnUNetPlans.json"))
    dataset_json = json.loads((planned_phantom["preprocessed"] / "dataset.json").read_text())
    for configuration in ("2d", "3d_fullres"):
        cm = pm.get_configuration(configuration)
        expected, _, expected_properties = DefaultPreprocessor(verbose=False).run_case(
            [str(planned_phantom["unlabeled"] / "unlabeled_scan_002.nii.gz")], None, pm, cm, dataset_json)
        folder = pool_dir(pool_env, planned_phantom, cm.data_identifier)
        stored = blosc2.open(str(folder / "unlabeled_scan_002.b2nd"))[:]
        np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-6)
        properties = pickle.loads((folder / "unlabeled_scan_002.pkl").read_bytes())
        for key in ("spacing", "shape_before_cropping", "bbox_used_for_cropping", "sitk_stuff"):
            assert properties[key] == expected_properties[key], key


def test_labelled_training_image_matches_nnunets_own_preprocessed_data(pool_env, planned_phantom, tmp_path):
    """The same scan, once through the pool and once through nnU-Net's training preprocessing,
    gives the same array: same spacing, same CT clipping and normalisation."""
    image = planned_phantom["raw"] / "imagesTr" / "phantom_000_0000.nii.gz"
    copy = tmp_path / "labelled_copy"
    copy.mkdir()
    (copy / "copy_of_phantom_000.nii.gz").write_bytes(image.read_bytes())
    add(pool_env, planned_phantom["id"], copy, "-c", "2d")
    pooled = blosc2.open(str(pool_dir(pool_env, planned_phantom) / "copy_of_phantom_000.b2nd"))[:]
    nnunet = blosc2.open(str(planned_phantom["preprocessed"] / "nnUNetPlans_2d" / "phantom_000.b2nd"))[:]
    np.testing.assert_allclose(pooled, nnunet, rtol=1e-5, atol=1e-5)


def _write_dicom_series(volume: np.ndarray, folder: Path, series_uid: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.GetImageFromArray(volume), sitk.sitkInt16)
    sx, sy, sz = DEFAULT_SPACING_XYZ  # the phantom's spacing: this series needs no resampling
    image.SetSpacing((sx, sy, sz))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        s = image[:, :, z]
        for tag, value in (("0010|0020", "PHANTOM"), ("0020|000e", series_uid), ("0020|000d", "1.2.3"),
                           ("0008|0060", "CT"), ("0020|0032", f"0\\0\\{sz * z}"), ("0020|0013", str(z)),
                           ("0018|0050", str(sz)), ("0028|0030", f"{sy}\\{sx}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0")):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{z:03d}.dcm"))
        writer.Execute(s)


def test_dicom_series_folders_enter_the_pool(pool_env, planned_phantom, tmp_path):
    volume, _ = make_phantom_volume(np.random.default_rng(7), (16, 48, 48))
    _write_dicom_series(np.round(volume), tmp_path / "dicom" / "patient_a", "1.2.3.4.1")
    result = add(pool_env, planned_phantom["id"], tmp_path / "dicom", "-c", "2d")
    assert "added 1 case(s)" in result.stdout
    manifest = json.loads((pool_dir(pool_env, planned_phantom) / "pool.json").read_text())
    assert manifest["cases"]["patient_a"]["shape"] == [1, 16, 48, 48]


def _bad_inputs(folder: Path) -> dict[str, str]:
    """Files that must be refused, and the words their error must contain."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    good, _ = make_phantom_volume(rng, (16, 48, 48))
    sitk.WriteImage(sitk.GetImageFromArray(good), str(folder / "good_scan.nii.gz"))
    (folder / "truncated.nii.gz").write_bytes((folder / "good_scan.nii.gz").read_bytes()[:300])
    (folder / "empty.nii.gz").write_bytes(b"")
    two_channels = sitk.JoinSeries([sitk.GetImageFromArray(good)] * 2)  # a 4D image: (2, z, y, x)
    sitk.WriteImage(two_channels, str(folder / "two_channels.nii.gz"))
    with_nan = good.copy()
    with_nan[3, 10, 10] = np.nan  # .mha keeps NaN (ITK's NIfTI reader turns NaN into 0)
    sitk.WriteImage(sitk.GetImageFromArray(with_nan), str(folder / "nan.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(np.full((16, 48, 48), -1000, np.float32)), str(folder / "flat.nii.gz"))
    return {"truncated.nii.gz": "cannot be read", "empty.nii.gz": "cannot be read",
            "two_channels.nii.gz": "2 channel(s), the dataset expects 1", "nan.mha": "NaN",
            "flat.nii.gz": "same value"}


def test_bad_files_abort_everything_by_default_and_are_skipped_on_request(pool_env, planned_phantom, filled_pool,
                                                                         tmp_path):
    bad = _bad_inputs(tmp_path / "mixed")
    folder = pool_dir(pool_env, planned_phantom, "nnUNetPlans_3d_fullres")
    before = json.loads((folder / "pool.json").read_text())["cases"]
    aborted = add(pool_env, planned_phantom["id"], tmp_path / "mixed", "-c", "3d_fullres", check=False)
    assert aborted.returncode == 1
    for name, words in bad.items():
        line = next((l for l in aborted.stderr.splitlines() if name in l), "")
        assert line.startswith("ERROR:") and words in line, (name, aborted.stderr)
    assert json.loads((folder / "pool.json").read_text())["cases"] == before, "abort must add nothing"
    skipped = add(pool_env, planned_phantom["id"], tmp_path / "mixed", "-c", "3d_fullres", "--on-error", "skip")
    assert "added 1 case(s)" in skipped.stdout and "5 unreadable" in skipped.stdout
    assert set(json.loads((folder / "pool.json").read_text())["cases"]) == set(before) | {"good_scan"}


def test_unplanned_dataset_and_missing_configuration_are_clear_errors(pool_env, planned_phantom):
    missing = add(pool_env, 123, planned_phantom["unlabeled"], check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("ERROR: dataset 123 not found")
    config = add(pool_env, planned_phantom["id"], planned_phantom["unlabeled"], "-c", "3d_lowres", check=False)
    assert config.returncode == 1 and "configuration '3d_lowres' is not in nnUNetPlans.json" in config.stderr
    unplanned = add(pool_env, planned_phantom["id"], planned_phantom["unlabeled"], "-p", "OtherPlans", check=False)
    assert unplanned.returncode == 1 and "run nnUNetv2_plan_and_preprocess -d 991 first" in unplanned.stderr


def test_preview_draws_one_row_per_source(pool_env, planned_phantom, filled_pool, tmp_path):
    """The labelled cases and each pool scan (4, or more after other tests of this module): one row
    of 3 patches each in one PNG, refused to overwrite."""
    rows = 1 + len(json.loads((pool_dir(pool_env, planned_phantom) / "pool.json").read_text())["cases"])
    preview = tmp_path / "preview.png"
    args = [command("nnUNetv2_diffusion_pool_preview"), "-d", str(planned_phantom["id"]), "-c", "2d", "-n", "3",
            "-o", str(preview)]
    result = run(args, pool_env)
    assert rows >= 5 and f"{rows} source(s), 3 patch(es) each" in result.stdout
    height, width = plt.imread(preview).shape[:2]
    assert (height, width) == ((2 * rows + 1) * 90, round(1.8 * 3 * 90)), "one row per source"
    again = run(args, pool_env, check=False)
    assert again.returncode == 1 and again.stderr.startswith("ERROR:") and "--overwrite" in again.stderr


def test_phantom_scans_pass_the_pool_checks_and_are_recorded(pool_env, planned_phantom, filled_pool):
    manifest = json.loads((pool_dir(pool_env, planned_phantom) / "pool.json").read_text())
    low, high = manifest["reference"]["channels"][0]["clipped"]
    for case in manifest["cases"].values():
        figures = case["checks"]["figures"][0]
        assert figures["clipped"] is not None and figures["clipped"] <= high + 0.25
        assert case["checks"]["mismatch_allowed"] is None and case["checks"]["window"] is None
