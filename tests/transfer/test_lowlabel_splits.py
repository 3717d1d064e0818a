"""Low-label folds: the pure functions, and ``nnUNetv2_make_lowlabel_splits`` on the phantom."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import command, run
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import (budgets_to_counts, choose_held_out,
                                                                cross_validation_held_out, labelled_cases_per_repeat,
                                                                repeat_start)
from nnunet_diffusion_pretrain.transfer.sparse_slice_dataset import spread_slices

CASES = [f"case_{i:02d}" for i in range(20)]


def test_held_out_set_is_deterministic_and_shared():
    a, b = choose_held_out(CASES, 4, seed=0), choose_held_out(CASES, 4, seed=0)
    assert a == b and len(set(a)) == 4
    assert choose_held_out(CASES, 4, seed=1) != a
    with pytest.raises(UserFacingError):
        choose_held_out(CASES, 20, seed=0)


def test_cross_validation_holds_out_every_case_exactly_once():
    groups = [cross_validation_held_out(CASES[:7], 3, k, seed=0) for k in range(3)]
    assert sorted(sum(groups, [])) == CASES[:7] and sorted(len(g) for g in groups) == [2, 2, 3]
    assert groups == [cross_validation_held_out(CASES[:7], 3, k, seed=0) for k in range(3)], "deterministic"
    assert groups != [cross_validation_held_out(CASES[:7], 3, k, seed=1) for k in range(3)]
    with pytest.raises(UserFacingError, match="cross-validation folds"):
        cross_validation_held_out(CASES[:7], 3, 3, seed=0)


def test_repeats_differ_budgets_nest_and_never_touch_the_held_out_set():
    held_out = choose_held_out(CASES, 4, seed=0)
    pool = [c for c in CASES if c not in held_out]
    orders = labelled_cases_per_repeat(pool, repeats=3, seed=0)
    assert orders == labelled_cases_per_repeat(pool, repeats=3, seed=0)
    assert len({o[0] for o in orders}) == 3, "each repeat starts from another labelled case"
    for order in orders:
        assert sorted(order) == sorted(pool) and not set(order) & set(held_out)
        assert set(order[:1]) <= set(order[:2]) <= set(order[:4])
    assert budgets_to_counts([1, 4], [0.1, 0.5], len(pool)) == \
        [("cases", 1.0, 1), ("cases", 4.0, 4), ("fraction", 0.1, 2), ("fraction", 0.5, 8)]
    with pytest.raises(UserFacingError, match="only 16 training cases"):
        budgets_to_counts([17], [], len(pool))


def test_a_repeat_keeps_its_cases_when_more_repeats_are_asked_for():
    pool = CASES[:12]
    many = labelled_cases_per_repeat(pool, repeats=14, seed=0)
    for repeats in range(1, 14):
        assert labelled_cases_per_repeat(pool, repeats, seed=0) == many[:repeats]
    assert len({order[0] for order in many[:12]}) == 12, "the first n repeats start at different cases"
    assert not set(many[0][:4]) & set(many[1][:4]) and not set(many[1][:4]) & set(many[2][:4]), \
        "repeats 0-2 take disjoint thirds of the pool"
    assert [repeat_start(r, 12) for r in range(4)] == [0, 4, 8, 1]


def test_slices_are_spread_over_the_foreground_and_differ_per_phase():
    foreground = np.arange(10, 40)
    assert spread_slices(foreground, 4) == [13, 21, 28, 36]  # (i + 0.5) / 4 of the 30 foreground slices
    assert spread_slices(foreground, 4, phase=0.25) != spread_slices(foreground, 4, phase=0.75)
    with pytest.raises(UserFacingError):
        spread_slices(np.arange(3), 4)


def splits_command(env, *args, check=True):
    return run([command("nnUNetv2_make_lowlabel_splits"), "-d", "991", *args], env, check=check)


def test_command_appends_folds_keeps_existing_ones_and_writes_a_manifest(nnunet_env, planned_phantom):
    splits_file = planned_phantom["preprocessed"] / "splits_final.json"
    before = json.loads(splits_file.read_text()) if splits_file.is_file() else None
    common = ["--num-labeled", "1", "2", "--num-val", "2", "--seed", "0"]
    args = [*common, "--repeats", "2"]
    first = splits_command(nnunet_env, *args)
    splits = json.loads(splits_file.read_text())
    assert len(splits) == 5 + 4
    if before is not None:
        assert splits[:len(before)] == before, "existing folds must never change"
    manifest = json.loads((planned_phantom["preprocessed"] / "lowlabel_splits.json").read_text())
    held_out = manifest["held_out"]
    assert len(held_out) == 2
    for entry in manifest["folds"]:
        fold = splits[entry["fold"]]
        assert fold["val"] == held_out and fold["train"] == entry["train"]
        assert len(fold["train"]) == entry["budget"] and not set(fold["train"]) & set(held_out)
        assert f"{entry['fold']:>5}  Dataset991" in first.stdout
    splits_command(nnunet_env, *args)
    assert json.loads(splits_file.read_text()) == splits, "the same arguments must add nothing"

    manifest_file = planned_phantom["preprocessed"] / "lowlabel_splits.json"
    splits_command(nnunet_env, *common, "--repeats", "3")
    extended = json.loads(manifest_file.read_text())
    assert [f for f in extended["folds"] if f["repeat"] < 2] == manifest["folds"], "earlier repeats must stay"
    assert {(f["budget"], f["repeat"]) for f in extended["folds"] if f["repeat"] == 2} == {(1.0, 2), (2.0, 2)}
    assert json.loads(splits_file.read_text())[:len(splits)] == splits

    tampered = json.loads(manifest_file.read_text())
    (entry,) = [f for f in tampered["folds"] if (f["budget"], f["repeat"]) == (1.0, 1)]
    entry["train"] = next(f["train"] for f in extended["folds"] if (f["budget"], f["repeat"]) == (1.0, 0))
    manifest_file.write_text(json.dumps(tampered))
    splits_before = splits_file.read_text()
    refused = splits_command(nnunet_env, *args, check=False)
    manifest_file.write_text(json.dumps(extended))
    assert refused.returncode == 1 and "already gives repeat 1 of budget 1 (cases)" in refused.stderr
    assert splits_file.read_text() == splits_before, "a refused request must write nothing"
    too_many = splits_command(nnunet_env, "--num-labeled", "4", "--num-val", "2", check=False)
    assert too_many.returncode == 1 and "only 3 training cases" in too_many.stderr
    other_val = splits_command(nnunet_env, "--num-labeled", "1", "--num-val", "1", check=False)
    assert other_val.returncode == 1 and "already uses the held-out cases" in other_val.stderr


def test_cv_fold_holds_out_each_case_in_exactly_one_of_k_calls(nnunet_env, planned_phantom, tmp_path):
    held_out = []
    for k in range(3):  # each fold on its own copy of the preprocessed dataset, as a benchmark's folds are
        root = tmp_path / f"preprocessed_{k}"
        copy = shutil.copytree(planned_phantom["preprocessed"], root / planned_phantom["name"],
                               ignore=shutil.ignore_patterns("splits_final.json", "lowlabel_splits.json"))
        splits_command(dict(nnunet_env, nnUNet_preprocessed=str(root)), "--cv-fold", "3", str(k), "--all-labeled",
                       "--num-labeled", "1", "--repeats", "2", "--seed", "0")
        manifest = json.loads((copy / "lowlabel_splits.json").read_text())
        held_out.append(manifest["held_out"])
        assert all(not set(f["train"]) & set(manifest["held_out"]) for f in manifest["folds"])
    cases = sorted(p.name[:-len(".nii.gz")] for p in (planned_phantom["preprocessed"] / "gt_segmentations")
                   .glob("*.nii.gz"))
    assert sorted(sum(held_out, [])) == cases, "every case held out exactly once"
    both = splits_command(nnunet_env, "--cv-fold", "3", "0", "--num-val", "2", "--num-labeled", "1", check=False)
    assert both.returncode != 0 and "give --cv-fold or --num-val, not both" in both.stderr


def test_slice_budget_makes_a_sparse_label_dataset_on_the_source_plans(nnunet_env, planned_phantom):
    result = splits_command(nnunet_env, "--num-labeled-slices", "3", "--slice-dataset-id", "992", "--repeats", "2",
                            "--num-val", "2", "--seed", "0")
    raw = Path(nnunet_env["nnUNet_raw"]) / "Dataset992_TestPhantomSlices"
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"]) / raw.name
    dataset_json = json.loads((raw / "dataset.json").read_text())
    assert dataset_json["labels"]["ignore"] == 5
    manifest = json.loads((preprocessed / "lowlabel_splits.json").read_text())
    # the source dataset's held-out set for the same seed (what its own folds use), computed here so
    # that this test does not depend on another test having written the source manifest
    source_cases = sorted(p.name[:-len(".nii.gz")] for p in (planned_phantom["preprocessed"] / "gt_segmentations")
                          .glob("*.nii.gz"))
    assert manifest["held_out"] == choose_held_out(source_cases, 2, seed=0)
    for entry in manifest["folds"]:
        (case,) = entry["train"]
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{case}.nii.gz")))
        annotated = [z for z in range(label.shape[0]) if (label[z] != 5).any()]
        assert len(annotated) == 3 and all((label[z] > 0).any() for z in annotated)
        assert f"{case}: labelled slices {annotated}" in result.stdout
    for case in manifest["held_out"]:
        full = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{case}.nii.gz")))
        assert 5 not in np.unique(full)
    source_plans = json.loads((planned_phantom["preprocessed"] / "nnUNetPlans.json").read_text())
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d"] == source_plans["configurations"]["2d"]
    assert plans["foreground_intensity_properties_per_channel"] == \
        source_plans["foreground_intensity_properties_per_channel"]
    assert len(list((preprocessed / "nnUNetPlans_2d").glob("*.b2nd"))) == 2 * (2 + 2)  # data + seg files

    slice_args = ["--num-labeled-slices", "3", "--slice-dataset-id", "992", "--num-val", "2", "--seed", "0"]
    (repeat1,) = manifest["folds"][1]["train"]
    (repeat0,) = manifest["folds"][0]["train"]
    label = raw / "labelsTr" / f"{repeat1}.nii.gz"
    moved = raw / "labelsTr" / f"{repeat0.split('_s3r0')[0]}_s3r1.nii.gz"
    label.rename(moved)  # as if repeat 1 had been labelled on another volume
    files_before = sorted(p.name for p in raw.rglob("*"))
    refused = splits_command(nnunet_env, *slice_args, "--repeats", "3", check=False)
    files_after = sorted(p.name for p in raw.rglob("*"))
    moved.rename(label)
    assert refused.returncode == 1 and f"already holds {moved.name[:-len('.nii.gz')]} for repeat 1" in refused.stderr
    assert files_after == files_before, "a refused request must write nothing"
