"""Sampling synthetic images: the command on a pretrained phantom checkpoint, sampler determinism
and shapes, and the intensity mapping back from nnU-Net's normalisation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization
from torch import nn

from conftest import command, run
from nnunet_diffusion_pretrain.pool.intensity_mapping import to_dataset_intensities
from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings
from nnunet_diffusion_pretrain.diffusion.sampling import sample_images


class _Shrink(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.1 * x


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samplers_are_seeded_and_shaped(sampler):
    settings, cpu = DiffusionSettings(), torch.device("cpu")
    a = sample_images(_Shrink(), settings, (3, 2, 8, 12), cpu, sampler, 8, seed=5, progress=False)
    b = sample_images(_Shrink(), settings, (3, 2, 8, 12), cpu, sampler, 8, seed=5, progress=False)
    c = sample_images(_Shrink(), settings, (3, 2, 8, 12), cpu, sampler, 8, seed=6, progress=False)
    assert a.shape == (3, 2, 8, 12) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    volume = sample_images(_Shrink(), settings, (1, 1, 4, 8, 8), cpu, sampler, 4, seed=0, progress=False)
    assert volume.shape == (1, 1, 4, 8, 8) and torch.isfinite(volume).all()


def test_samples_come_back_in_nnunet_intensities_when_the_diffusion_space_is_mapped():
    """The same trajectory in diffusion space; only the map back differs."""
    cpu, mapped = torch.device("cpu"), DiffusionSettings(input_scale=0.25, input_shift=0.5)
    plain = sample_images(_Shrink(), DiffusionSettings(), (2, 1, 8, 8), cpu, "ddim", 6, seed=3, progress=False)
    back = sample_images(_Shrink(), mapped, (2, 1, 8, 8), cpu, "ddim", 6, seed=3, progress=False)
    assert torch.allclose(back, (plain - 0.5) / 0.25, atol=1e-5)


def test_ddim_eta_adds_noise_and_ddpm_differs_from_ddim():
    settings, cpu = DiffusionSettings(), torch.device("cpu")
    deterministic = sample_images(_Shrink(), settings, (2, 1, 8, 8), cpu, "ddim", 10, eta=0.0, progress=False)
    stochastic = sample_images(_Shrink(), settings, (2, 1, 8, 8), cpu, "ddim", 10, eta=1.0, progress=False)
    ddpm = sample_images(_Shrink(), settings, (2, 1, 8, 8), cpu, "ddpm", 10, progress=False)
    assert not torch.equal(deterministic, stochastic) and not torch.equal(deterministic, ddpm)
    with pytest.raises(ValueError, match="sampler"):
        sample_images(_Shrink(), settings, (1, 1, 8, 8), cpu, "euler", 2, progress=False)


def test_ct_intensities_round_trip_through_nnunet_normalisation():
    properties = {"mean": 45.0, "std": 120.0, "percentile_00_5": -900.0, "percentile_99_5": 1200.0}
    hu = np.random.default_rng(0).uniform(-1100, 1500, (4, 16, 16)).astype(np.float32)
    normalised = CTNormalization(False, properties).run(hu.copy())
    both = np.stack([normalised, normalised], axis=1)  # (n, channels, y, x)
    mapped, scales = to_dataset_intensities(both, ["CTNormalization", "ZScoreNormalization"],
                                            {"0": properties, "1": properties})
    np.testing.assert_allclose(mapped[:, 0], np.clip(hu, -900, 1200), rtol=1e-5, atol=1e-2)
    np.testing.assert_array_equal(mapped[:, 1], both[:, 1])  # per-image z-score: left in network space
    assert "Hounsfield" in scales[0] and "network space" in scales[1]


def test_sample_command_writes_nifti_in_dataset_intensities(nnunet_env, planned_phantom, pretrained_checkpoint,
                                                             tmp_path):
    out = tmp_path / "samples"
    args = [command("nnUNetv2_diffusion_sample"), "-d", str(planned_phantom["id"]), "-c", "2d", "-n", "3",
            "--steps", "3", "--seed", "1", "-chk", str(pretrained_checkpoint), "-o", str(out)]
    run(args, nnunet_env)
    files = sorted(out.glob("sample_*.nii.gz"))
    assert len(files) == 3 and (out / "samples.png").stat().st_size > 1000
    info = json.loads((out / "samples.json").read_text())
    plans = json.loads((planned_phantom["preprocessed"] / "nnUNetPlans.json").read_text())
    patch, spacing = plans["configurations"]["2d"]["patch_size"], plans["configurations"]["2d"]["spacing"]
    image = sitk.ReadImage(str(files[0]))
    assert image.GetSize()[:2] == tuple(reversed(patch)) and image.GetSpacing()[:2] == pytest.approx(spacing[::-1])
    fg = plans["foreground_intensity_properties_per_channel"]["0"]
    values = sitk.GetArrayFromImage(image)
    assert fg["percentile_00_5"] <= values.min() and values.max() <= fg["percentile_99_5"]  # HU range, not z-scores
    assert info["sampler"] == "ddim" and info["seed"] == 1 and "Hounsfield" in info["intensity_scale_per_channel"][0]

    again = tmp_path / "again"
    run([*args[:-1], str(again)], nnunet_env)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(again / "sample_000.nii.gz"))), values)

    refused = run(args, nnunet_env, check=False)  # the folder is not empty now
    assert refused.returncode != 0 and "not empty" in refused.stderr
    other = run([*args[:-2], "-d", str(planned_phantom["id"]), "-c", "3d_fullres", "-o", str(tmp_path / "x")],
                nnunet_env, check=False)
    assert other.returncode != 0 and "does not fit" in other.stderr
