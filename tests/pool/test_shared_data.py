"""The pipeline on real scans from ../shared/data (skipped where that folder is absent).

The six real BTCV CT volumes (windowed to 0..255 by their providers) form a labelled dataset,
converted with our converter; the TotalSegmentator example CTs (raw Hounsfield units, 3 mm, stored
RAS) are the unlabeled pool: refused as they are, taken with ``--window -125 275``; pretraining runs
a few iterations through the stock command, then a fine-tuning with one labelled volume is validated
on three held-out volumes (without mirroring: it would quadruple this test's cost).
"""
from __future__ import annotations

import json
from pathlib import Path

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import SHARED_DATA, command, run, training_env, tree_snapshot
from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely

BTCV = SHARED_DATA / "abdomen_ct_btcv6"
UNLABELED = SHARED_DATA / "unlabeled_ct"
HU_SCAN = UNLABELED / "totalsegmentator_example_ct.nii.gz"
HU_SCAN_SMALL = UNLABELED / "totalsegmentator_example_ct_sm.nii.gz"
pytestmark = pytest.mark.skipif(not (BTCV.is_dir() and UNLABELED.is_dir()),
                                reason=f"real scans not available at {SHARED_DATA} (they never ship with the repo)")


@pytest.fixture(scope="module")
def btcv(nnunet_env) -> Path:
    run([command("nnUNetv2_convert_btcv6_subset"), "-i", str(BTCV), "-d", "501", "-np", "1"], nnunet_env)
    run([command("nnUNetv2_plan_and_preprocess"), "-d", "501", "-c", "2d", "-np", "2",
         "--verify_dataset_integrity"], nnunet_env)
    return Path(nnunet_env["nnUNet_raw"]) / "Dataset501_BTCV6Subset"


def _folder_of(tmp_path: Path, name: str, *scans: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for scan in scans:
        (folder / scan.name).symlink_to(scan)
    return folder


def _pool(env: dict, raw: Path) -> Path:
    return Path(env["nnUNet_diffusion_pool"]) / raw.name / "nnUNetPlans_2d"


def test_hu_scan_is_refused_by_a_windowed_dataset_with_one_error_line(nnunet_env, btcv, tmp_path):
    env = dict(nnunet_env, nnUNet_diffusion_pool=str(tmp_path / "pool"))
    refused = run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", "501", "-c", "2d", "-i",
                   str(_folder_of(tmp_path, "hu", HU_SCAN))], env, check=False)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, refused.stderr
    assert HU_SCAN.name in errors[0] and "clipped flat" in errors[0] and "labelled cases: " in errors[0]
    assert "--window" in errors[0] and "--allow-mismatch" in errors[0]
    clipped = float(errors[0].split("% of its body voxels")[0].rsplit(" ", 1)[1])
    assert clipped > 80, "a raw-HU scan under a 0..255 dataset's CT normalisation is clipped almost whole"
    manifest = json.loads((_pool(env, btcv) / "pool.json").read_text())
    assert manifest["cases"] == {}
    assert sorted(p.name for p in _pool(env, btcv).iterdir()) == [".staging", "pool.json"], "nothing added"
    assert manifest["reference"]["orientation"] == "LAS", "the converter writes the direction btcv6's voxels are in"

    before = tree_snapshot(_pool(env, btcv))
    again = run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", "501", "-c", "2d", "-i",
                 str(tmp_path / "hu")], env, check=False)
    assert again.returncode != 0 and tree_snapshot(_pool(env, btcv)) == before, "the pool is unchanged"

    taken = run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", "501", "-c", "2d", "-i",
                 str(tmp_path / "hu"), "--allow-mismatch"], env)
    assert "added 1 case(s)" in taken.stdout
    assert any(line.startswith("WARNING:") and "--allow-mismatch" in line for line in taken.stderr.splitlines())
    case = json.loads((_pool(env, btcv) / "pool.json").read_text())["cases"]["totalsegmentator_example_ct"]
    assert case["checks"]["figures"][0]["clipped"] > 0.8 and "clipped flat" in case["checks"]["mismatch_allowed"]


@pytest.fixture(scope="module")
def windowed_pool(nnunet_env, btcv, tmp_path_factory) -> dict:
    """The HU scans converted with --window -125 275, plus a copy of the small one stored in
    another orientation (same voxels in space, other axis order and signs)."""
    folder = tmp_path_factory.mktemp("hu_windowed")
    for scan in (HU_SCAN, HU_SCAN_SMALL):
        (folder / scan.name).symlink_to(scan)
    sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(HU_SCAN_SMALL)), "PIL"), str(folder / "flipped_copy.nii.gz"))
    env = dict(nnunet_env, nnUNet_diffusion_pool=str(tmp_path_factory.mktemp("pool")))
    result = run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", "501", "-c", "2d", "-i", str(folder),
                  "--window", "-125", "275"], env)
    return {"result": result, "pool": _pool(env, btcv), "folder": folder, "env": env}


def test_windowed_hu_scan_is_taken_and_looks_like_the_labelled_cases(nnunet_env, btcv, windowed_pool, tmp_path):
    assert "added 3 case(s)" in windowed_pool["result"].stdout
    manifest = json.loads((windowed_pool["pool"] / "pool.json").read_text())
    low, high = manifest["reference"]["channels"][0]["clipped"]
    checks = manifest["cases"]["totalsegmentator_example_ct"]["checks"]
    assert low <= checks["figures"][0]["clipped"] <= high, (checks, low, high)
    p5, p50, p95 = checks["figures"][0]["percentiles_z"]
    assert p5 < p50 == checks["figures"][0]["median_z"] < p95
    assert checks["window"] == {"low": -125.0, "high": 275.0, "out_low": 0.0, "out_high": 255.0}
    assert (checks["stored_orientation"], checks["reoriented_to"]) == ("RAS", "LAS")

    # the pool holds exactly nnU-Net's inference preprocessing of the reoriented, windowed scan
    image = sitk.DICOMOrient(sitk.ReadImage(str(HU_SCAN)), "LAS")
    windowed = sitk.GetImageFromArray(np.clip((sitk.GetArrayFromImage(image) + 125.0) / 400.0, 0, 1) * 255.0)
    windowed.CopyInformation(image)
    sitk.WriteImage(windowed, str(tmp_path / "expected_0000.nii.gz"))
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"]) / btcv.name
    pm = PlansManager(str(preprocessed / "nnUNetPlans.json"))
    expected, _, _ = DefaultPreprocessor(verbose=False).run_case(
        [str(tmp_path / "expected_0000.nii.gz")], None, pm, pm.get_configuration("2d"),
        json.loads((preprocessed / "dataset.json").read_text()))
    stored = blosc2.open(str(windowed_pool["pool"] / "totalsegmentator_example_ct.b2nd"))[:]
    np.testing.assert_allclose(stored, expected, atol=1e-4)


def test_scan_stored_in_another_orientation_gives_the_same_preprocessed_array(windowed_pool):
    manifest = json.loads((windowed_pool["pool"] / "pool.json").read_text())
    assert manifest["cases"]["flipped_copy"]["checks"]["stored_orientation"] == "PIL"
    original = blosc2.open(str(windowed_pool["pool"] / "totalsegmentator_example_ct_sm.b2nd"))[:]
    flipped = blosc2.open(str(windowed_pool["pool"] / "flipped_copy.b2nd"))[:]
    assert original.shape == flipped.shape
    np.testing.assert_allclose(flipped, original, atol=1e-4)


def test_real_ct_pool_and_pretraining(nnunet_env, btcv, windowed_pool, tmp_path):
    env = training_env(windowed_pool["env"], num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    env["nnUNet_diffusion_num_samples"] = "2"
    run([command("nnUNetv2_train"), "501", "2d", "all", "-tr", "nnUNetTrainerDiffusionPretrain", "-device", "cpu"],
        env)  # pool = the 6 labelled volumes' images + the 3 windowed HU scans
    folder = Path(nnunet_env["nnUNet_results"]) / btcv.name / "nnUNetTrainerDiffusionPretrain__nnUNetPlans__2d"
    checkpoint = load_checkpoint_safely(folder / "fold_all" / "checkpoint_final.pth")
    assert checkpoint["diffusion_pretraining"]["dataset_name"] == btcv.name
    assert (folder / "fold_all" / "samples" / "samples.png").is_file()
    log = next((folder / "fold_all").glob("training_log_*.txt")).read_text()
    assert "6 labelled cases (labels unused) + " in log

    preview = tmp_path / "preview.png"
    shown = run([command("nnUNetv2_diffusion_pool_preview"), "-d", "501", "-c", "2d", "-o", str(preview), "-n", "3"],
                windowed_pool["env"])
    assert "4 source(s)" in shown.stdout and preview.is_file()


def test_one_labelled_real_volume_finetunes_and_validates_on_held_out_volumes(nnunet_env, btcv):
    checkpoint = Path(nnunet_env["nnUNet_results"]) / btcv.name / "nnUNetTrainerDiffusionPretrain__nnUNetPlans__2d" / \
        "fold_all" / "checkpoint_final.pth"
    if not checkpoint.is_file():  # this test run alone: pretrain briefly first
        env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=1, num_val_iterations_per_epoch=1)
        env["nnUNet_diffusion_num_samples"] = "1"
        run([command("nnUNetv2_train"), "501", "2d", "all", "-tr", "nnUNetTrainerDiffusionPretrain", "-device",
             "cpu"], env)
    run([command("nnUNetv2_make_lowlabel_splits"), "-d", "501", "--num-labeled", "1", "--repeats", "1",
         "--num-val", "3", "--seed", "0"], nnunet_env)
    manifest = json.loads((Path(nnunet_env["nnUNet_preprocessed"]) / btcv.name / "lowlabel_splits.json").read_text())
    (entry,) = manifest["folds"]
    env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    run([command("nnUNetv2_train"), "501", "2d", str(entry["fold"]), "-tr", "nnUNetTrainerDiffusionFinetuneNoMirroring",
         "-device", "cpu", "-pretrained_weights", str(checkpoint)], env)
    summary = json.loads((Path(nnunet_env["nnUNet_results"]) / btcv.name /
                          "nnUNetTrainerDiffusionFinetuneNoMirroring__nnUNetPlans__2d" / f"fold_{entry['fold']}" /
                          "validation" / "summary.json").read_text())
    assert len(entry["train"]) == 1 and len(manifest["held_out"]) == 3
    assert sorted(c["reference_file"].split("/")[-1][:-len(".nii.gz")] for c in summary["metric_per_case"]) == \
        sorted(manifest["held_out"])
    assert set(summary["mean"]) == {"1", "2", "3", "4"}


CHAOS = SHARED_DATA / "abdomen_mr_chaos20"


@pytest.mark.skipif(not CHAOS.is_dir(), reason=f"real MR scans not available at {CHAOS}")
def test_mr_dataset_takes_an_mr_scan_and_refuses_a_hu_ct_scan(nnunet_env, tmp_path):
    """Per-image z-scoring clips nothing: the body's spread (95th percentile) tells the kinds apart."""
    run([command("nnUNetv2_convert_chaos_mr"), "-i", str(CHAOS), "-d", "502", "-np", "1"], nnunet_env)
    run([command("nnUNetv2_plan_and_preprocess"), "-d", "502", "-c", "2d", "-np", "2"], nnunet_env)
    env = dict(nnunet_env, nnUNet_diffusion_pool=str(tmp_path / "pool"))
    add = [command("nnUNetv2_diffusion_add_unlabeled"), "-d", "502", "-c", "2d", "-i"]
    refused = run([*add, str(_folder_of(tmp_path, "ct", HU_SCAN))], env, check=False)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("ERROR:")]
    assert refused.returncode != 0 and len(errors) == 1 and "95th percentile" in errors[0], refused.stderr
    taken = run([*add, str(_folder_of(tmp_path, "mr", CHAOS / "image_1.nii.gz"))], env)
    assert "added 1 case(s)" in taken.stdout
    case = json.loads((Path(env["nnUNet_diffusion_pool"]) / "Dataset502_CHAOSMR" / "nnUNetPlans_2d" /
                       "pool.json").read_text())["cases"]["image_1"]
    assert case["checks"]["figures"][0]["clipped"] is None
