"""Synthetic-data augmentation: generated images, pseudo-labelled by a low-label model with a
confidence threshold, become extra training cases of a derived dataset on the same plans, and the
fine-tuning trainer trains on it with the pretrained weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from conftest import command, lowlabel_fold, run, training_env
from nnunet_diffusion_pretrain.diffusion.synthetic_cases import confident_labels


def test_confident_labels_keep_only_sure_voxels():
    probabilities = np.array([[[0.95, 0.5], [0.1, 0.3]],
                              [[0.05, 0.5], [0.9, 0.7]]])  # 2 classes, 2 x 2 voxels
    labels, kept = confident_labels(probabilities, 0.9, ignore=7)
    assert labels.tolist() == [[0, 7], [1, 7]] and kept == 0.5


def test_synthetic_dataset_command_and_finetuning_on_it(nnunet_env, planned_phantom, pretrained_checkpoint):
    fold, held_out = lowlabel_fold(planned_phantom, nnunet_env)
    env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    labeler = "nnUNetTrainerDiffusionFinetune"
    folder = Path(nnunet_env["nnUNet_results"]) / planned_phantom["name"] / f"{labeler}__nnUNetPlans__2d" / f"fold_{fold}"
    if not (folder / "checkpoint_final.pth").is_file():
        run([command("nnUNetv2_train"), str(planned_phantom["id"]), "2d", str(fold), "-tr", labeler, "-device", "cpu",
             "-pretrained_weights", str(pretrained_checkpoint)], env)
    args = [command("nnUNetv2_diffusion_synthetic_dataset"), "-d", str(planned_phantom["id"]), "-c", "2d", "-f",
            str(fold), "-chk", str(pretrained_checkpoint), "-n", "3", "--steps", "2", "--threshold", "0.5",
            "--target-id", "971"]
    run(args, nnunet_env)
    raw = next(Path(nnunet_env["nnUNet_raw"]).glob("Dataset971_*"))
    dataset = json.loads((raw / "dataset.json").read_text())
    ignore = dataset["labels"]["ignore"]
    assert ignore == max(v for k, v in dataset["labels"].items() if k != "ignore") + 1
    synthetic = sorted(p.name for p in (raw / "labelsTr").glob("synthetic_*.nii.gz"))
    assert len(synthetic) == 3
    report = json.loads((raw / "synthetic_cases.json").read_text())
    for name in synthetic:
        label = sitk.ReadImage(str(raw / "labelsTr" / name))
        image = sitk.ReadImage(str(raw / "imagesTr" / name.replace(".nii.gz", "_0000.nii.gz")))
        assert label.GetSize() == image.GetSize() and label.GetSpacing() == image.GetSpacing()
        values = sitk.GetArrayFromImage(label)
        assert set(np.unique(values)) <= set(dataset["labels"].values())
        kept = report["fraction_of_voxels_kept"][name.replace(".nii.gz", "")]
        assert np.mean(values != ignore) == kept
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"]) / raw.name
    split = json.loads((preprocessed / "splits_final.json").read_text())
    source_split = json.loads((planned_phantom["preprocessed"] / "splits_final.json").read_text())[fold]
    assert split == [{"train": sorted(source_split["train"] + [s[:-7] for s in synthetic]), "val": sorted(held_out)}]

    before = (raw / "synthetic_cases.json").read_bytes()
    run(args, nnunet_env)  # again: nothing regenerated
    assert (raw / "synthetic_cases.json").read_bytes() == before
    other = run([*args[:-1], "972", "--threshold", "0.7"], nnunet_env)  # another ID: fine
    assert "synthetic training cases" in other.stdout
    taken = run([*args[:-4], "--threshold", "0.8", "--target-id", "971"], nnunet_env, check=False)
    assert taken.returncode != 0 and "taken" in taken.stderr

    trained = run([command("nnUNetv2_train"), "971", "2d", "0", "-tr", labeler, "-device", "cpu",
                   "-pretrained_weights", str(pretrained_checkpoint)], env)
    assert "Pretrained weights from" in trained.stdout
    summary = Path(nnunet_env["nnUNet_results"]) / raw.name / f"{labeler}__nnUNetPlans__2d" / "fold_0" / \
        "validation" / "summary.json"
    assert sorted(c["reference_file"].split("/")[-1][:-7] for c in json.loads(summary.read_text())["metric_per_case"]) \
        == sorted(held_out)
