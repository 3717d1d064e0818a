"""The pipeline on real scans from ../shared/data (skipped where that folder is absent).

The six real BTCV CT volumes (windowed to 0..255 by their providers) form a labelled dataset; the
TotalSegmentator example CTs (raw Hounsfield units, 3 mm) are the unlabeled pool; pretraining runs a
few iterations through the stock command, then a fine-tuning with one labelled volume is validated
on three held-out volumes (without mirroring: it would quadruple this test's cost).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import SHARED_DATA, command, run, training_env
from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely

BTCV = SHARED_DATA / "abdomen_ct_btcv6"
UNLABELED = SHARED_DATA / "unlabeled_ct"
pytestmark = pytest.mark.skipif(not (BTCV.is_dir() and UNLABELED.is_dir()),
                                reason=f"real scans not available at {SHARED_DATA} (they never ship with the repo)")


def write_btcv_subset(raw: Path, volumes: list[int]) -> None:
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for v in volumes:
        shutil.copy(BTCV / f"image_{v}.nii.gz", raw / "imagesTr" / f"btcv_{v:03d}_0000.nii.gz")
        shutil.copy(BTCV / f"label_{v}.nii.gz", raw / "labelsTr" / f"btcv_{v:03d}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": len(volumes),
        "labels": {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}}))


@pytest.fixture(scope="module")
def btcv(nnunet_env) -> Path:
    raw = Path(nnunet_env["nnUNet_raw"]) / "Dataset501_BTCVSubset"
    write_btcv_subset(raw, [0, 9, 10, 18, 20, 27])
    run([command("nnUNetv2_plan_and_preprocess"), "-d", "501", "-c", "2d", "-np", "2",
         "--verify_dataset_integrity"], nnunet_env)
    return raw


def test_real_ct_pool_and_pretraining(nnunet_env, btcv):
    raw = btcv
    result = run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", "501", "-c", "2d", "-i", str(UNLABELED)],
                 nnunet_env)
    assert "added 2 case(s)" in result.stdout
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"]) / raw.name
    pm = PlansManager(str(preprocessed / "nnUNetPlans.json"))
    hu_scan = UNLABELED / "totalsegmentator_example_ct.nii.gz"
    expected, _, _ = DefaultPreprocessor(verbose=False).run_case(
        [str(hu_scan)], None, pm, pm.get_configuration("2d"), json.loads((preprocessed / "dataset.json").read_text()))
    pool = Path(nnunet_env["nnUNet_preprocessed"]) / "nnUNet_diffusion_pool" / raw.name / "nnUNetPlans_2d"
    stored = blosc2.open(str(pool / "totalsegmentator_example_ct.b2nd"))[:]
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    source_shape = sitk.GetArrayFromImage(sitk.ReadImage(str(hu_scan))).shape
    assert stored.shape[1:] != source_shape, "3 mm HU scan must be resampled to the plans' spacing"

    env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    env["nnUNet_diffusion_num_samples"] = "2"
    run([command("nnUNetv2_train"), "501", "2d", "all", "-tr", "nnUNetTrainerDiffusionPretrain", "-device", "cpu"],
        env)  # pool = the 6 labelled volumes' images + the 2 HU scans
    folder = Path(nnunet_env["nnUNet_results"]) / raw.name / "nnUNetTrainerDiffusionPretrain__nnUNetPlans__2d"
    checkpoint = load_checkpoint_safely(folder / "fold_all" / "checkpoint_final.pth")
    assert checkpoint["diffusion_pretraining"]["dataset_name"] == raw.name
    assert (folder / "fold_all" / "samples" / "samples.png").is_file()


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
