"""``nnUNetv2_diffusion_fid``: FID, sFID, precision, recall and F1 of generated against real images.

    nnUNetv2_diffusion_fid REAL_DIR FAKE_DIR --inception-weights weights-inception-2015-12-05-6726825d.pth
    nnUNetv2_diffusion_fid REAL_DIR FAKE_DIR --features nnunet -d 501 -c 2d -p nnUNetPlans -f all

REAL_DIR: real scans (NIfTI/NRRD/MHA, cut into axial slices); FAKE_DIR: samples of
nnUNetv2_diffusion_sample. Real slices are resampled to the samples' in-plane spacing and
centre-fitted to their size (the configuration's patch size). ``--features inception`` (the
standard FID network, from a local weights file: nothing is downloaded) and ``--features nnunet``
(the pretrained denoiser's encoder: no download, tuned to CT, NOT comparable to published FIDs).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nnunet_diffusion_pretrain.cli.checkpoint_arguments import add_checkpoint_arguments, resolve_checkpoint
from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.diffusion.feature_networks import InceptionFeatures, NnunetEncoderFeatures
from nnunet_diffusion_pretrain.diffusion.generation_metrics import quality_metrics
from nnunet_diffusion_pretrain.pool.image_sets import nnunet_normalised, read_slices, slice_geometry, windowed_uint8
from nnunet_diffusion_pretrain.planned_dataset import load_planned_dataset
from nnunet_diffusion_pretrain.diffusion.pretrained_denoiser import load_pretrained_denoiser


def _features(network, images: torch.Tensor, batch_size: int, what: str) -> dict[str, torch.Tensor]:
    parts = [network(images[i:i + batch_size])
             for i in tqdm(range(0, len(images), batch_size), desc=f"features of {what}", unit="batch")]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("real", type=Path, help="folder of real images")
    parser.add_argument("fake", type=Path, help="folder of generated images")
    parser.add_argument("--features", nargs="+", choices=("inception", "nnunet"), default=["inception"])
    parser.add_argument("--inception-weights", type=Path, default=Path("weights-inception-2015-12-05-6726825d.pth"),
                        help="local file of the FID Inception weights (torch-fidelity's conversion)")
    parser.add_argument("--window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="intensity window for Inception; default: the real set's 0.5/99.5 percentiles")
    parser.add_argument("-d", help="dataset (for --features nnunet)")
    add_checkpoint_arguments(parser)
    parser.add_argument("-k", type=int, default=3, help="neighbourhood size for precision/recall; default 3")
    parser.add_argument("--max-images", type=int, default=None, help="use at most this many slices per set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-images subset")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("-o", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if "nnunet" in args.features and not args.d:
        parser.error("--features nnunet needs -d (the dataset whose pretrained encoder extracts the features)")

    size, spacing = slice_geometry(args.fake)
    fake = read_slices(args.fake, size, None, args.max_images, args.seed)
    real = read_slices(args.real, size, spacing, args.max_images, args.seed)
    if min(len(fake), len(real)) <= args.k:
        raise UserFacingError(f"need more than k={args.k} slices per set (real {len(real)}, fake {len(fake)})")
    device = torch.device(args.device)
    results = {"real": str(args.real), "fake": str(args.fake), "num_real_slices": len(real),
               "num_fake_slices": len(fake), "slice_size": list(size), "spacing": list(spacing), "k": args.k}
    if "inception" in args.features:
        low, high = args.window or np.percentile(real, [0.5, 99.5]).tolist()
        network = InceptionFeatures(args.inception_weights, device)
        results["inception"] = quality_metrics(_features(network, windowed_uint8(real, low, high), args.batch_size,
                                                         "real slices"),
                                               _features(network, windowed_uint8(fake, low, high), args.batch_size,
                                                         "generated slices"), args.k) | {"window": [low, high]}
    if "nnunet" in args.features:
        dataset = load_planned_dataset(args.d, args.c, args.p)
        checkpoint = resolve_checkpoint(args, dataset)
        network = NnunetEncoderFeatures(load_pretrained_denoiser(dataset, checkpoint, device).network, device)
        results["nnunet_encoder"] = quality_metrics(
            _features(network, nnunet_normalised(real, dataset), args.batch_size, "real slices"),
            _features(network, nnunet_normalised(fake, dataset), args.batch_size, "generated slices"), args.k) | {
            "checkpoint": str(checkpoint), "note": "domain features: not comparable to published FIDs"}
    for name in ("inception", "nnunet_encoder"):
        if name in results:
            m = results[name]
            print(f"{name:>15}: FID {m['fid']:.3f}  sFID {m['sfid']:.3f}  precision {m['precision']:.3f}  "
                  f"recall {m['recall']:.3f}  F1 {m['f1']:.3f}")
    if args.o:
        args.o.parent.mkdir(parents=True, exist_ok=True)
        args.o.write_text(json.dumps(results, indent=2))
        print(f"written: {args.o}")
    return 0
