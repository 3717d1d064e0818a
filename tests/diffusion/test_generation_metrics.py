"""Image-quality metrics: precision/recall on point sets with known answers, the Fréchet distance,
and the command on the phantom (a set against itself scores about 0, FID grows with added noise),
plus the error for missing Inception weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import command, run
from nnunet_diffusion_pretrain.diffusion.generation_metrics import frechet_distance, precision_recall


def test_precision_recall_on_constructed_point_sets():
    grid = torch.stack(torch.meshgrid(torch.arange(10.), torch.arange(10.), indexing="ij"), -1).reshape(-1, 2)
    assert precision_recall(grid, grid) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    far = precision_recall(grid, grid + 1000)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    half = grid[grid[:, 0] < 5]  # generated samples cover half of the real manifold, all realistic
    covered = precision_recall(grid, half)
    assert covered["precision"] == 1.0
    assert 0.4 < covered["recall"] < 0.7  # real points near the covered half (within one k-NN radius) count
    assert covered["f1"] == pytest.approx(2 * covered["recall"] / (1 + covered["recall"]), rel=1e-4)


def test_frechet_distance_of_gaussians():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, 4, generator=g), torch.randn(4000, 4, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, b) < 0.05
    assert frechet_distance(a, b + 2.0) == pytest.approx(16.0, rel=0.05)  # |mean difference|^2 = 4 * 2^2


def _write_noisy_slices(source_images, out, sigma: float, seed: int) -> None:
    out.mkdir()
    rng = np.random.default_rng(seed)
    for path in source_images:
        volume = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(volume).astype(np.float32)
        for z, s in enumerate(array):
            noisy = sitk.GetImageFromArray((s + rng.normal(0, sigma, s.shape) if sigma else s)[None].astype(np.float32))
            noisy.SetSpacing((*volume.GetSpacing()[:2], 1.0))
            sitk.WriteImage(noisy, str(out / f"{path.name.split('.')[0]}_{z:03d}.nii.gz"))


def test_fid_command_scores_a_set_against_itself_near_zero_and_grows_with_noise(nnunet_env, planned_phantom,
                                                                                pretrained_checkpoint, tmp_path):
    images = sorted((planned_phantom["raw"] / "imagesTr").glob("*.nii.gz"))
    scores = []
    for sigma in (0.0, 30.0, 150.0):
        fake = tmp_path / f"fake_{sigma:g}"
        _write_noisy_slices(images, fake, sigma, seed=1)
        out = tmp_path / f"fid_{sigma:g}.json"
        run([command("nnUNetv2_diffusion_fid"), str(planned_phantom["raw"] / "imagesTr"), str(fake), "--features",
             "nnunet", "-d", str(planned_phantom["id"]), "-c", "2d", "-chk", str(pretrained_checkpoint), "-o",
             str(out)], nnunet_env)
        scores.append(json.loads(out.read_text())["nnunet_encoder"])
    assert abs(scores[0]["fid"]) < 1e-3 and abs(scores[0]["sfid"]) < 1e-3  # identical sets (float round-off)
    assert scores[0]["precision"] == 1.0 and scores[0]["recall"] == 1.0
    assert scores[0]["fid"] < scores[1]["fid"] < scores[2]["fid"]
    assert scores[0]["sfid"] < scores[1]["sfid"] < scores[2]["sfid"]


def test_fid_command_names_the_missing_inception_weights(nnunet_env, planned_phantom, tmp_path):
    images = planned_phantom["raw"] / "imagesTr"
    result = run([command("nnUNetv2_diffusion_fid"), str(images), str(images), "--inception-weights",
                  str(tmp_path / "missing.pth")], nnunet_env, check=False)
    assert result.returncode != 0
    assert "missing.pth" in result.stderr and "github.com/toshas/torch-fidelity/releases" in result.stderr
