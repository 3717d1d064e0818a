"""``nnUNetv2_diffusion_synthetic_dataset``: synthetic-data augmentation for few labels.

    nnUNetv2_diffusion_synthetic_dataset -d 501 -c 2d -f 5 -tr nnUNetTrainerDiffusionFinetune \\
        -chk PRETRAINING_CHECKPOINT -n 64 --threshold 0.9 --target-id 801
    nnUNetv2_train 801 2d 0 -tr nnUNetTrainerDiffusionFinetune -pretrained_weights PRETRAINING_CHECKPOINT

Generates -n images with the pretrained diffusion model, labels them with a model already trained
on fold -f of dataset -d (``nnUNetv2_predict --save_probabilities``; voxels whose top class
probability is below --threshold get the ignore label), and writes a derived dataset on the same
plans: the fold's labelled cases + the synthetic cases for training, the fold's validation cases
(the held-out set) for validation, as fold 0 of its splits_final.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_diffusion_pretrain.subprocess_steps import console_script, run_step
from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.pool.derived_dataset import (copy_images, derived_raw_folder, ignore_label,
                                                       preprocess_on_source_plans)
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.intensity_mapping import to_dataset_intensities
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import fold_cases, write_json_atomically
from nnunet_diffusion_pretrain.planned_dataset import load_planned_dataset
from nnunet_diffusion_pretrain.diffusion.pretrained_denoiser import load_pretrained_denoiser
from nnunet_diffusion_pretrain.diffusion.sampling import sample_images
from nnunet_diffusion_pretrain.diffusion.synthetic_cases import confident_labels, write_generated_images

SYNTHETIC_PREFIX = "synthetic_"


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True, help="source dataset (planned; may be a slice-budget dataset)")
    parser.add_argument("-c", default="2d", help="2D configuration; default 2d")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier; default nnUNetPlans")
    parser.add_argument("-f", required=True, type=int, help="the low-label fold of the source dataset")
    parser.add_argument("-tr", default="nnUNetTrainerDiffusionFinetune", help="trainer of the labelling model")
    parser.add_argument("-chk", required=True, type=Path, help="the diffusion pretraining checkpoint (the generator)")
    parser.add_argument("-n", type=int, default=64, help="synthetic images; default 64")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps; default 50")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.9,
                        help="keep a voxel's pseudo-label if its top class probability is at least this; default 0.9")
    parser.add_argument("--target-id", type=int, required=True, help="ID of the derived dataset")
    parser.add_argument("-np", type=int, default=2, help="processes for preprocessing")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    if not 0 < args.threshold <= 1:
        parser.error("--threshold must be in (0, 1]")

    source = load_planned_dataset(args.d, args.c, args.p)
    train, held_out = fold_cases(source.preprocessed_folder, args.f)
    labeler = (Path(os.environ["nnUNet_results"]) / source.name / f"{args.tr}__{args.p}__{args.c}" / f"fold_{args.f}")
    if not (labeler / "checkpoint_final.pth").is_file():
        raise UserFacingError(f"no trained labelling model in {labeler}; train it first: nnUNetv2_train {args.d} "
                              f"{args.c} {args.f} -tr {args.tr} -p {args.p}")
    provenance = {"source": source.name, "plans": args.p, "configuration": args.c, "fold": args.f,
                  "labeler": args.tr, "generator": str(args.chk.resolve()), "n": args.n, "steps": args.steps,
                  "seed": args.seed, "threshold": args.threshold}
    folder = derived_raw_folder(args.target_id, f"{source.name.split('_', 1)[1]}Synthetic", provenance)
    ending = source.dataset_json["file_ending"]
    labels = {k: v for k, v in source.dataset_json["labels"].items()} | {
        "ignore": ignore_label(source.dataset_json["labels"])}

    report_file = folder / "synthetic_cases.json"
    if not report_file.is_file():
        staging = folder.parent / f".{folder.name}_staging"
        shutil.rmtree(staging, ignore_errors=True)
        denoiser = load_pretrained_denoiser(source, args.chk, torch.device(args.device))
        patch = list(source.configuration_manager.patch_size)
        samples = sample_images(denoiser.network, denoiser.settings, (args.n, source.num_input_channels, *patch),
                                torch.device(args.device), "ddim", args.steps, seed=args.seed,
                                batch_size=source.configuration_manager.batch_size)
        mapped, _ = to_dataset_intensities(samples.numpy(), source.configuration_manager.normalization_schemes,
                                           source.plans["foreground_intensity_properties_per_channel"])
        cases = write_generated_images(mapped, source.plans_manager, args.c, staging / "images", SYNTHETIC_PREFIX,
                                       ending)
        run_step(f"label {len(cases)} synthetic images with {args.tr} (fold {args.f})", [
            console_script("nnUNetv2_predict"), "-i", str(staging / "images"), "-o", str(staging / "labels"), "-d",
            source.name, "-c", args.c, "-p", args.p, "-tr", args.tr, "-f", str(args.f), "--save_probabilities",
            "-device", args.device, "-npp", "1", "-nps", "1"], dict(os.environ))
        kept = {}
        for case in cases:
            probabilities = np.load(staging / "labels" / f"{case}.npz")["probabilities"]
            seg, kept[case] = confident_labels(probabilities, args.threshold, labels["ignore"])
            reference = sitk.ReadImage(str(staging / "images" / f"{case}_0000{ending}"))
            label_image = sitk.GetImageFromArray(seg)
            label_image.CopyInformation(reference)
            sitk.WriteImage(label_image, str(folder / "labelsTr" / f"{case}{ending}"), True)
            for image in (staging / "images").glob(f"{case}_*{ending}"):
                shutil.copy(image, folder / "imagesTr" / image.name)
        write_json_atomically(report_file, {"fraction_of_voxels_kept": kept, **provenance})
        shutil.rmtree(staging)
    synthetic = sorted(json.loads(report_file.read_text())["fraction_of_voxels_kept"])

    source_raw = Path(os.environ["nnUNet_raw"]) / source.name
    for case in train + held_out:
        if not (folder / "labelsTr" / f"{case}{ending}").is_file():
            copy_images(sorted(str(p) for p in (source_raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")),
                        folder / "imagesTr", case, ending)
            shutil.copy(source_raw / "labelsTr" / f"{case}{ending}", folder / "labelsTr" / f"{case}{ending}")
    preprocess_on_source_plans(source, folder, args.target_id, labels,
                               f"{source.name} fold {args.f} plus {len(synthetic)} synthetic cases pseudo-labelled by "
                               f"{args.tr} (threshold {args.threshold}; other voxels: ignore)", args.p, args.c, args.np)
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / folder.name
    write_json_atomically(preprocessed / "splits_final.json", [{"train": sorted(train + synthetic), "val": held_out}])
    kept = json.loads(report_file.read_text())["fraction_of_voxels_kept"]
    print(f"{folder}: {len(train)} labelled + {len(synthetic)} synthetic training cases (mean fraction of voxels "
          f"kept {np.mean(list(kept.values())):.2f}), {len(held_out)} validation cases as fold 0")
    print(f"next: nnUNetv2_train {args.target_id} {args.c} 0 -tr nnUNetTrainerDiffusionFinetune -p {args.p} "
          f"-pretrained_weights {args.chk}")
    return 0
