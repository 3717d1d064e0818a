"""``nnUNetv2_train ... -tr nnUNetTrainerDiffusionPretrain`` through the stock command."""
from __future__ import annotations

import json
from pathlib import Path

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import RESENC_TINY, command, run, training_env
from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely, save_checkpoint_atomically
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.diffusion.input_range import unit_range_mapping
from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings, denoising_loss, predicted_clean_image
from nnunet_diffusion_pretrain.diffusion.pretraining_data import PretrainingImages, pretraining_loader, split_pool
from nnunet_diffusion_pretrain.diffusion.pretraining_record import RECORD_KEY
from nnunet_diffusion_pretrain.training import nnUNetTrainerDiffusionPretrain
from nnunet_diffusion_pretrain.pool.unlabeled_pool import PoolManifest

TRAINER = "nnUNetTrainerDiffusionPretrain"


def train(env, dataset, configuration, fold="all", *extra, trainer=TRAINER, check=True):
    return run([command("nnUNetv2_train"), str(dataset), configuration, str(fold), "-tr", trainer, "-device", "cpu",
                *extra], env, check=check)


def fold_folder(env, planned, configuration, fold="all", trainer=TRAINER, plans="nnUNetPlans") -> Path:
    return Path(env["nnUNet_results"]) / planned["name"] / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"


@pytest.fixture(scope="module")
def pool_2d_3d(nnunet_env, planned_phantom):
    run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", str(planned_phantom["id"]), "-c", "2d", "3d_fullres",
         "-i", str(planned_phantom["unlabeled"])], nnunet_env)


@pytest.fixture(scope="module")
def pretrained_2d(nnunet_env, planned_phantom, pool_2d_3d):
    env = training_env(nnunet_env, num_epochs=2, num_iterations_per_epoch=3, num_val_iterations_per_epoch=1)
    env.update(nnUNet_pretrain_warmup="6", nnUNet_pretrain_keep="3,9")  # warm-up over 2 epochs
    result = train(env, planned_phantom["id"], "2d")
    return {"result": result, "folder": fold_folder(nnunet_env, planned_phantom, "2d"), "env": env}


def test_2d_pretraining_writes_checkpoint_log_plot_and_samples(pretrained_2d):
    folder = pretrained_2d["folder"]
    checkpoint = load_checkpoint_safely(folder / "checkpoint_final.pth")  # weights_only=True: no pickled code
    assert checkpoint["current_epoch"] == 2 and checkpoint["trainer_name"] == TRAINER
    record = checkpoint[RECORD_KEY]
    assert record["plans_name"] == "nnUNetPlans" and record["configuration"] == "2d"
    assert record["data_identifier"] == "nnUNetPlans_2d"
    assert record["network_class_name"].endswith("PlainConvUNet") and record["arch_kwargs"]["n_stages"] >= 3
    assert (record["num_train_timesteps"], record["beta_schedule"], record["prediction_type"]) == \
        (1000, "linear", "epsilon")
    assert all(t.device.type == "cpu" for t in checkpoint["network_weights"].values())
    ema, online = checkpoint["network_weights"], checkpoint["online_network_weights"]
    assert ema.keys() == online.keys()
    assert any(not torch.equal(ema[k], online[k]) for k in ema), "network_weights must be the EMA weights"
    assert len(checkpoint["logging"]["val_losses"]) == 2 and len(checkpoint["logging"]["train_losses"]) == 2
    log = next(folder.glob("training_log_*.txt")).read_text()
    assert log.count("(at t=500:") == 2
    assert (folder / "progress.png").stat().st_size > 10_000
    assert checkpoint["logging"]["lrs"] == pytest.approx([1e-4, 2e-4]), "linear warm-up to 2e-4"
    kept = load_checkpoint_safely(folder / "checkpoint_it3.pth")  # nnUNet_pretrain_keep=3,9
    assert kept["current_epoch"] == 1 and kept[RECORD_KEY] == record
    assert any(not torch.equal(kept["network_weights"][k], kept["online_network_weights"][k]) for k in ema)
    assert not (folder / "checkpoint_it6.pth").exists()
    samples = sorted((folder / "samples").glob("sample_*.nii.gz"))
    assert len(samples) == 16 and (folder / "samples" / "samples.png").stat().st_size > 5_000
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(samples[0])))
    assert array.shape == (1, *record["patch_size"]) and np.isfinite(array).all()


def test_continue_with_c_resumes_from_the_checkpoint(nnunet_env, planned_phantom, pretrained_2d):
    folder = pretrained_2d["folder"]
    first = load_checkpoint_safely(folder / "checkpoint_final.pth")
    # written as package 0.6.0 did (no input map in the record): resuming it must still work
    older_record = {k: v for k, v in first[RECORD_KEY].items() if k not in ("input_scale", "input_shift")}
    save_checkpoint_atomically({**first, RECORD_KEY: older_record}, folder / "checkpoint_final.pth")
    env = dict(pretrained_2d["env"], nnUNet_num_epochs="3")  # a longer budget continues the same schedule
    result = train(env, planned_phantom["id"], "2d", "all", "--c")
    assert "Epoch 2" in result.stdout and "Epoch 0" not in result.stdout and "Epoch 1\n" not in result.stdout
    resumed = load_checkpoint_safely(folder / "checkpoint_final.pth")
    assert resumed["current_epoch"] == 3
    assert resumed["logging"]["train_losses"][:2] == first["logging"]["train_losses"]
    assert resumed["ema_state"]["optimization_step"] == first["ema_state"]["optimization_step"] + 3
    assert resumed["logging"]["lrs"] == pytest.approx([1e-4, 2e-4, 2e-4]), "constant after the warm-up"
    assert load_checkpoint_safely(folder / "checkpoint_it9.pth")["current_epoch"] == 3

    bad_keep = dict(env, nnUNet_pretrain_keep="4")
    refused = train(bad_keep, planned_phantom["id"], "2d", "all", "--c", check=False)
    assert refused.returncode != 0
    assert "nnUNet_pretrain_keep: 4 iterations do not end an epoch of 3 iterations" in refused.stderr

    old = folder.parent / "format1.pth"  # a checkpoint of package <= 0.8 (conditioning after each stage)
    save_checkpoint_atomically({**resumed, RECORD_KEY: {**resumed[RECORD_KEY], "format_version": 1}}, old)
    refused = run([command("nnUNetv2_diffusion_sample"), "-d", str(planned_phantom["id"]), "-c", "2d", "-n", "1",
                   "--steps", "2", "-chk", str(old), "-o", str(folder.parent / "format1_samples")], nnunet_env,
                  check=False)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "older version of this plugin" in errors[0] and "pretrain again" in errors[0]


def test_3d_fullres_pretraining_and_sampling(nnunet_env, planned_phantom, pool_2d_3d):
    env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    env["nnUNet_diffusion_num_samples"] = "2"
    train(env, planned_phantom["id"], "3d_fullres")
    folder = fold_folder(nnunet_env, planned_phantom, "3d_fullres")
    record = load_checkpoint_safely(folder / "checkpoint_final.pth")[RECORD_KEY]
    assert len(record["patch_size"]) == 3
    sample = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "samples" / "sample_001.nii.gz")))
    assert sample.shape == tuple(record["patch_size"])

    # the sampling command on 3d_fullres: whole patches as NIfTI volumes, plans' spacing, HU
    out = folder.parent / "sampled_3d"
    run([command("nnUNetv2_diffusion_sample"), "-d", str(planned_phantom["id"]), "-c", "3d_fullres", "-n", "2",
         "--steps", "2", "--sampler", "ddpm", "-chk", str(folder / "checkpoint_final.pth"), "-o", str(out)], nnunet_env)
    plans = PlansManager(str(planned_phantom["preprocessed"] / "nnUNetPlans.json")).get_configuration("3d_fullres")
    volume = sitk.ReadImage(str(out / "sample_001.nii.gz"))
    assert sitk.GetArrayFromImage(volume).shape == tuple(plans.patch_size)
    assert volume.GetSpacing() == pytest.approx(tuple(reversed(plans.spacing)))
    assert json.loads((out / "samples.json").read_text())["patch_size"] == list(plans.patch_size)


def test_residual_encoder_plans_with_cosine_v_prediction(nnunet_env, planned_phantom, pool_2d_3d):
    trainer = "nnUNetTrainerDiffusionPretrain_cosine_vpred"
    env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    env["nnUNet_diffusion_num_samples"] = "2"
    train(env, planned_phantom["id"], RESENC_TINY, "all", "-p", "nnUNetResEncUNetMPlans", trainer=trainer)
    folder = fold_folder(nnunet_env, planned_phantom, RESENC_TINY, trainer=trainer, plans="nnUNetResEncUNetMPlans")
    record = load_checkpoint_safely(folder / "checkpoint_final.pth")[RECORD_KEY]
    assert record["network_class_name"].endswith("ResidualEncoderUNet")
    assert (record["beta_schedule"], record["prediction_type"]) == ("cosine", "v_prediction")
    assert record["plans_name"] == "nnUNetResEncUNetMPlans"


def test_unit_range_variant_records_the_map_that_sends_the_clipped_ct_range_to_plus_minus_one(
        nnunet_env, planned_phantom, pool_2d_3d):
    trainer = "nnUNetTrainerDiffusionPretrain_unitRange"
    env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    env["nnUNet_diffusion_num_samples"] = "2"
    result = train(env, planned_phantom["id"], "2d", trainer=trainer)
    record = load_checkpoint_safely(fold_folder(nnunet_env, planned_phantom, "2d", trainer=trainer)
                                    / "checkpoint_final.pth")[RECORD_KEY]
    plans = json.loads((planned_phantom["preprocessed"] / "nnUNetPlans.json").read_text())
    p = plans["foreground_intensity_properties_per_channel"]["0"]
    clipped = np.array([p["percentile_00_5"], p["percentile_99_5"]])
    mapped = (clipped - p["mean"]) / p["std"] * record["input_scale"] + record["input_shift"]
    assert mapped == pytest.approx([-1.0, 1.0], abs=1e-4)
    assert record["clip_sample"] is True, "sampling clips the predicted clean image to [-1, 1]"
    assert DiffusionSettings.from_record(record).ddim_scheduler().config.clip_sample
    assert f"Images are noised as x * {record['input_scale']:.4f} + {record['input_shift']:.4f}" in result.stdout

    mri = PlansManager(str(planned_phantom["preprocessed"] / "nnUNetPlans.json"))
    mri.plans["configurations"]["2d"]["normalization_schemes"] = ["ZScoreNormalization"]
    with pytest.raises(UserFacingError, match="needs one CTNormalization channel"):
        unit_range_mapping(mri, mri.get_configuration("2d"))


def test_fold_k_holds_out_that_splits_validation_cases(nnunet_env, planned_phantom, pool_2d_3d):
    env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=1, num_val_iterations_per_epoch=1)
    env["nnUNet_diffusion_num_samples"] = "1"
    result = train(env, planned_phantom["id"], "2d", 0)
    pool = Path(nnunet_env["nnUNet_preprocessed"]) / "nnUNet_diffusion_pool" / planned_phantom["name"] / "nnUNetPlans_2d"
    pool_train, pool_held_out = split_pool(sorted(json.loads((pool / "pool.json").read_text())["cases"]))
    assert pool_held_out and pool_train
    splits = json.loads((planned_phantom["preprocessed"] / "splits_final.json").read_text())
    assert f"Pretraining images: {len(splits[0]['train'])} labelled cases (labels unused) + {len(pool_train)} " \
           f"pool cases" in result.stdout
    assert f"held out: {len(splits[0]['val'])} labelled + {len(pool_held_out)} pool cases" in result.stdout


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(nnunet_env, planned_phantom, pool_2d_3d):
    trainer = "nnUNetTrainerDiffusionPretrainNaNTest"
    env = training_env(nnunet_env, num_epochs=3, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1,
                       save_every=1)
    result = train(env, planned_phantom["id"], "2d", "all", trainer=trainer, check=False)
    assert result.returncode != 0
    assert "Training stopped: the denoising loss became NaN/inf at epoch 1, iteration 1" in result.stdout
    folder = fold_folder(nnunet_env, planned_phantom, "2d", trainer=trainer)
    assert not (folder / "checkpoint_final.pth").exists()
    latest = load_checkpoint_safely(folder / "checkpoint_latest.pth")
    assert latest["current_epoch"] == 1
    assert all(torch.isfinite(t).all() for t in latest["network_weights"].values() if t.is_floating_point())


def test_pretraining_really_learns_to_denoise_held_out_images(nnunet_env, planned_phantom, pool_2d_3d):
    """Over a short run the held-out loss at mid-range noise falls clearly, and the pretrained
    denoiser removes more noise from held-out images than an untrained one."""
    env = training_env(nnunet_env, num_epochs=4, num_iterations_per_epoch=25, num_val_iterations_per_epoch=2)
    env.update(nnUNet_diffusion_num_samples="1", nnUNet_pretrain_warmup="25")  # one epoch of warm-up
    train(env, planned_phantom["id"], "2d", 1)
    checkpoint = load_checkpoint_safely(fold_folder(nnunet_env, planned_phantom, "2d", 1) / "checkpoint_final.pth")
    mid_t_losses = checkpoint["logging"]["val_losses_mid_t"]
    assert mid_t_losses[-1] < 0.7 * mid_t_losses[0], mid_t_losses

    pm = PlansManager(str(planned_phantom["preprocessed"] / "nnUNetPlans.json"))
    cm = pm.get_configuration("2d")
    torch.manual_seed(0)
    untrained = nnUNetTrainerDiffusionPretrain.build_network_architecture(pm, cm, 1, 1).eval()
    trained = nnUNetTrainerDiffusionPretrain.build_network_architecture(pm, cm, 1, 1).eval()
    trained.load_state_dict(checkpoint["network_weights"])
    held_out = json.loads((planned_phantom["preprocessed"] / "splits_final.json").read_text())[1]["val"]
    volumes = [blosc2.open(str(planned_phantom["preprocessed"] / "nnUNetPlans_2d" / f"{k}.b2nd"))[:] for k in held_out]
    x0 = torch.from_numpy(np.stack([v[:, z] for v in volumes for z in range(2, v.shape[1] - 2, 3)])).float()
    scheduler = DiffusionSettings().ddpm_scheduler()
    t = 500
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    timesteps = torch.full((x0.shape[0],), t)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    with torch.no_grad():
        errors = {name: torch.mean((predicted_clean_image(scheduler, net(x_t, timesteps), x_t, t) - x0) ** 2).item()
                  for name, net in (("trained", trained), ("untrained", untrained))}
        losses = {name: denoising_loss(net, scheduler, x0, timesteps, noise).item()
                  for name, net in (("trained", trained), ("untrained", untrained))}
    assert losses["trained"] < 0.5 * losses["untrained"], losses
    assert errors["trained"] < 0.5 * errors["untrained"], errors


def test_slice_narrower_than_the_patch_is_padded_with_its_background_value(tmp_path):
    """A normalised CT case whose air sits at the lower clip bound (-3.2) and whose slices are 20
    columns narrower than the patch: every patch the trainer's loader cuts shows air beside the
    body, never stock nnU-Net's 0 (mid-grey tissue after CT normalisation)."""
    air, tissue = np.float32(-3.2), np.float32(0.7)
    case = np.full((1, 4, 48, 28), air, dtype=np.float32)
    case[:, :, 8:40, 6:22] = tissue
    blosc2.asarray(case, urlpath=str(tmp_path / "narrow.b2nd"), mode="w")
    pool = PoolManifest(tmp_path, "Dataset999_Narrow", {}, {"narrow": {}})
    images = PretrainingImages(None, pool, ["narrow"], patch_size=[48, 48])
    padded = images.load_case("pool/narrow")[0]
    assert padded.shape == (1, 4, 48, 48)
    np.testing.assert_array_equal(padded[..., :10], air)
    np.testing.assert_array_equal(padded[..., 10:38], case)
    np.testing.assert_array_equal(padded[..., 38:], air)
    np.random.seed(0)
    batch = next(pretraining_loader(images, [48, 48], 8))["data"].numpy()
    assert batch.shape == (8, 1, 48, 48)
    np.testing.assert_allclose(batch[..., :3], air, atol=1e-4)  # rotation <= 15 deg, scaling <= 1.15 keep these
