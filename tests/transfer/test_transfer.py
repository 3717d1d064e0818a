"""Transfer to segmentation: weight mapping, refusals, freezing, the probe's features, and the
three trainers plus the baseline through nnU-Net's own train / predict / evaluate commands."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import command, lowlabel_fold, run, training_env
from nnunet_diffusion_pretrain.checkpoint_io import (EMA_WEIGHTS, RAW_WEIGHTS, load_checkpoint_safely,
                                                     save_checkpoint_atomically)
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.transfer.feature_probe import DiffusionFeatureClassifier
from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings
from nnunet_diffusion_pretrain.transfer.pretrained_transfer import DEFAULT_TRANSFER_TIMESTEP, load_pretrained_diffusion_weights
from nnunet_diffusion_pretrain.diffusion.pretraining_record import RECORD_KEY, pretraining_record, transfer_requirements
from nnunet_diffusion_pretrain.training import (nnUNetTrainerDiffusionDecoderFinetune, nnUNetTrainerDiffusionFinetune,
                                                nnUNetTrainerDiffusionFinetune_encoderLR1,
                                                nnUNetTrainerDiffusionFinetune_noEMA,
                                                nnUNetTrainerDiffusionFinetune_noWarmup,
                                                nnUNetTrainerDiffusionLinearProbe,
                                                nnUNetTrainerDiffusionLinearProbe_t5_25_50,
                                                nnUNetTrainerDiffusionLinearProbe_t250_500_750,
                                                nnUNetTrainerDiffusionPretrain)
from nnunet_diffusion_pretrain.training.transfer_trainers import PROBE_TIMESTEPS_ENV, PROBE_TIMESTEPS_KEY

TRAINERS = ["nnUNetTrainerDiffusionFinetune", "nnUNetTrainerDiffusionDecoderFinetune",
            "nnUNetTrainerDiffusionLinearProbe", "nnUNetTrainerBudget"]


@pytest.fixture(scope="module")
def plans(planned_phantom) -> PlansManager:
    return PlansManager(str(planned_phantom["preprocessed"] / "nnUNetPlans.json"))


def saved_denoiser(plans: PlansManager, path: Path, **record_changes) -> dict:
    cm = plans.get_configuration("2d")
    denoiser = nnUNetTrainerDiffusionPretrain.build_network_architecture(plans, cm, 1, 1)
    record = pretraining_record(plans, "2d", 1, DiffusionSettings(), denoiser.film.in_features) | record_changes
    weights = denoiser.state_dict()
    save_checkpoint_atomically({"network_weights": weights, RECORD_KEY: record}, path)
    return weights


def test_every_pretrained_weight_lands_and_heads_start_fresh(plans, tmp_path):
    weights = saved_denoiser(plans, tmp_path / "ckpt.pth")
    network = nnUNetTrainer.build_network_architecture(plans, plans.get_configuration("2d"), 1, 5)
    heads_before = {k: v.clone() for k, v in network.state_dict().items() if ".seg_layers." in k}
    report = load_pretrained_diffusion_weights(network, tmp_path / "ckpt.pth",
                                               transfer_requirements(plans, "2d", 1))
    state = network.state_dict()
    assert sorted(report.loaded) == sorted(k for k in state if ".seg_layers." not in k)
    assert sorted(report.fresh) == sorted(heads_before)
    assert all(torch.equal(state[k], weights[k]) for k in report.loaded)
    assert all(torch.equal(state[k], v) for k, v in heads_before.items())
    assert {k.split(".")[0] for k in report.unused} == {"time_embedding", "film"}
    assert "loaded" in report.summary() and "decoder.seg_layers" in report.summary()


class _RunsCodeWhenUnpickled:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("change, words", [
    ({"arch_kwargs": {"n_stages": 99}}, "arch_kwargs"),
    ({"num_input_channels": 2}, "num_input_channels"),
    ({"configuration": "3d_fullres"}, "configuration"),
    ({"preprocessing": {"spacing": [1.0, 1.0]}}, "preprocessing"),
])
def test_checkpoints_for_other_plans_are_refused_by_name(plans, tmp_path, change, words):
    saved_denoiser(plans, tmp_path / "ckpt.pth", **change)
    network = nnUNetTrainer.build_network_architecture(plans, plans.get_configuration("2d"), 1, 5)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(UserFacingError, match=f"pretrained for other plans.*{words}"):
        load_pretrained_diffusion_weights(network, tmp_path / "ckpt.pth", transfer_requirements(plans, "2d", 1))
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items()), "nothing may be loaded"


def test_checkpoints_of_the_old_conditioning_are_refused_with_one_line(plans, tmp_path):
    saved_denoiser(plans, tmp_path / "old.pth", format_version=1)
    network = nnUNetTrainer.build_network_architecture(plans, plans.get_configuration("2d"), 1, 5)
    with pytest.raises(UserFacingError, match="older version of this plugin.*pretrain again") as refusal:
        load_pretrained_diffusion_weights(network, tmp_path / "old.pth", transfer_requirements(plans, "2d", 1))
    assert "\n" not in str(refusal.value)


def test_unsafe_truncated_and_foreign_files_are_refused(plans, tmp_path):
    network = nnUNetTrainer.build_network_architecture(plans, plans.get_configuration("2d"), 1, 5)
    expected = transfer_requirements(plans, "2d", 1)
    payload = _RunsCodeWhenUnpickled()
    payload.marker = tmp_path / "code_ran"
    torch.save({"network_weights": {}, "evil": payload}, tmp_path / "evil.pth")
    with pytest.raises(UserFacingError, match="cannot be loaded safely"):
        load_pretrained_diffusion_weights(network, tmp_path / "evil.pth", expected)
    assert not payload.marker.exists(), "loading must not execute code from the file"
    saved_denoiser(plans, tmp_path / "ok.pth")  # EMA weights only
    with pytest.raises(UserFacingError, match="has no 'online_network_weights'"):
        load_pretrained_diffusion_weights(network, tmp_path / "ok.pth", expected, weights=RAW_WEIGHTS)
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "ok.pth").read_bytes()[:1000])
    with pytest.raises(UserFacingError, match="cannot be loaded safely"):
        load_pretrained_diffusion_weights(network, tmp_path / "truncated.pth", expected)
    torch.save({"network_weights": network.state_dict()}, tmp_path / "stock.pth")
    with pytest.raises(UserFacingError, match="not a diffusion pretraining checkpoint"):
        load_pretrained_diffusion_weights(network, tmp_path / "stock.pth", expected)


def test_probe_features_shapes_determinism_and_concat_equivalence(plans):
    cm = plans.get_configuration("2d")
    denoiser = nnUNetTrainerDiffusionPretrain.build_network_architecture(plans, cm, 1, 1)
    probe = DiffusionFeatureClassifier(denoiser, 5, DiffusionSettings(), timesteps=(50, 250), hidden_channels=8)
    x = torch.randn(2, 1, *cm.patch_size)
    with torch.no_grad():
        features = probe.features(x)
        assert len(features) == 2 * len(denoiser.decoder.stages)
        assert [f.shape[1] for f in features[:len(denoiser.decoder.stages)]] == \
            [denoiser.encoder.output_channels[-(i + 2)] for i in range(len(denoiser.decoder.stages))]
        logits = probe(x)
        assert logits.shape == (2, 5, *cm.patch_size)
        assert torch.equal(logits, probe(x)), "fixed timesteps and fixed noise: deterministic"
        # projecting each map then upsampling and summing == upsampling, concatenating, then one 1x1 conv
        upsampled = torch.cat([torch.nn.functional.interpolate(f, size=x.shape[2:], mode="bilinear")
                               for f in features], 1)
        weight = torch.cat([p.weight for p in probe.project], 1)
        bias = sum(p.bias for p in probe.project)
        direct = torch.nn.functional.conv2d(upsampled, weight, bias)
        summed = sum(torch.nn.functional.interpolate(p(f), size=x.shape[2:], mode="bilinear")
                     for p, f in zip(probe.project, features))
        assert torch.allclose(direct, summed, atol=1e-4)


def test_probe_noises_in_the_checkpoints_diffusion_space_and_loads_probes_without_an_input_map(plans):
    cm = plans.get_configuration("2d")
    denoiser = nnUNetTrainerDiffusionPretrain.build_network_architecture(plans, cm, 1, 1)
    plain = DiffusionFeatureClassifier(denoiser, 3, DiffusionSettings(), timesteps=(50,), hidden_channels=4)
    mapped = DiffusionFeatureClassifier(denoiser, 3, DiffusionSettings(), timesteps=(50,), hidden_channels=4)
    mapped.use_schedule(DiffusionSettings(input_scale=0.25, input_shift=0.5))
    x = torch.randn(1, 1, *cm.patch_size)
    with torch.no_grad():
        for a, b in zip(mapped.features(x), plain.features(x * 0.25 + 0.5)):
            assert torch.allclose(a, b, atol=1e-5)
        older = {k: v for k, v in mapped.state_dict().items() if k not in ("input_scale", "input_shift")}
        mapped.load_state_dict(older)  # a probe saved before the map existed: the identity
        assert (mapped.input_scale.item(), mapped.input_shift.item()) == (1.0, 0.0)


def test_probe_timesteps_come_from_the_variant_else_the_environment_else_the_default(monkeypatch):
    monkeypatch.delenv(PROBE_TIMESTEPS_ENV, raising=False)
    assert nnUNetTrainerDiffusionLinearProbe.probe_timesteps() == [50, 150, 250]
    assert nnUNetTrainerDiffusionLinearProbe_t5_25_50.probe_timesteps() == [5, 25, 50]
    monkeypatch.setenv(PROBE_TIMESTEPS_ENV, "25,100")
    assert nnUNetTrainerDiffusionLinearProbe.probe_timesteps() == [25, 100]
    with pytest.raises(UserFacingError, match="probes timesteps \\[250, 500, 750\\]; unset nnUNet_probe_timesteps"):
        nnUNetTrainerDiffusionLinearProbe_t250_500_750.probe_timesteps()
    for bad in ("25,x", "1000", "-1"):
        monkeypatch.setenv(PROBE_TIMESTEPS_ENV, bad)
        with pytest.raises(UserFacingError, match="comma-separated timesteps in \\[0, 1000\\)"):
            nnUNetTrainerDiffusionLinearProbe.probe_timesteps()


@pytest.mark.parametrize("trainer_class, frozen, trained", [
    (nnUNetTrainerDiffusionFinetune, ["encoder."], ["decoder.stages.", "decoder.seg_layers."]),
    (nnUNetTrainerDiffusionFinetune_encoderLR1, ["encoder."], ["decoder.stages.", "decoder.seg_layers."]),
    (nnUNetTrainerDiffusionFinetune_noWarmup, [], ["encoder.", "decoder.stages.", "decoder.seg_layers."]),
    (nnUNetTrainerDiffusionFinetune_noEMA, ["encoder."], ["decoder.stages.", "decoder.seg_layers."]),
    (nnUNetTrainerDiffusionDecoderFinetune, ["encoder."], ["decoder.stages.", "decoder.seg_layers."]),
    (nnUNetTrainerDiffusionLinearProbe, ["denoiser."], ["project.", "head."]),
    (nnUNetTrainerDiffusionLinearProbe_t250_500_750, ["denoiser."], ["project.", "head."]),
])
def test_frozen_parameters_stay_and_trained_ones_move(nnunet_env, planned_phantom, pretrained_checkpoint,
                                                      monkeypatch, trainer_class, frozen, trained):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, nnunet_env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    plans = json.loads((planned_phantom["preprocessed"] / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((planned_phantom["preprocessed"] / "dataset.json").read_text())
    trainer = trainer_class(plans, "2d", 0, dataset_json, torch.device("cpu"))
    trainer.num_epochs = 10  # Finetune: warm-up is epoch 0 only
    trainer.initialize()
    trainer.load_pretrained(str(pretrained_checkpoint))
    checkpoint = load_checkpoint_safely(pretrained_checkpoint)
    start, other = (RAW_WEIGHTS, EMA_WEIGHTS) if trainer_class is nnUNetTrainerDiffusionFinetune_noEMA else \
        (EMA_WEIGHTS, RAW_WEIGHTS)  # the pretraining's EMA weights unless the variant asks for the raw ones
    prefix = trainer.transfer_target()[2]  # the probe holds the denoiser as "denoiser."
    encoder = {k[len(prefix):]: v for k, v in trainer.network.state_dict().items() if k.startswith(prefix + "encoder.")}
    assert encoder
    expected = checkpoint[start]
    if trainer.transfer_timestep is not None:  # U-Nets: the conditioning at t* folded into the norms
        denoiser = nnUNetTrainerDiffusionPretrain.build_network_architecture(trainer.plans_manager,
                                                                              trainer.configuration_manager, 1, 1)
        denoiser.load_state_dict(expected)
        expected = denoiser.folded_state_dict(trainer.transfer_timestep)
        norms = [k for k in encoder if k.endswith("norm.weight")]
        assert norms and not all(torch.equal(encoder[k], checkpoint[start][k]) for k in norms), "folded, not copied"
    assert all(torch.equal(v, expected[k]) for k, v in encoder.items())
    assert not all(torch.equal(v, checkpoint[other][k]) for k, v in encoder.items())
    trainer.on_train_start()
    if issubclass(trainer_class, nnUNetTrainerDiffusionLinearProbe):  # the timesteps it probes, and stores for
        timesteps = trainer_class.fixed_timesteps or (50, 150, 250)     # prediction in the plans it writes
        assert trainer.network.timesteps.tolist() == list(timesteps)
        plans_written = json.loads((Path(trainer.output_folder_base) / "plans.json").read_text())
        assert plans_written["configurations"]["2d"][PROBE_TIMESTEPS_KEY] == list(timesteps)

    def steps(epoch: int) -> dict[str, torch.Tensor]:
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        before = {k: v.detach().clone() for k, v in trainer.network.named_parameters()}
        for _ in range(2):
            trainer.train_step(next(trainer.dataloader_train))
        return {k: not torch.equal(before[k], v) for k, v in trainer.network.named_parameters()}

    moved = steps(0)
    for prefix in frozen:
        assert not any(m for k, m in moved.items() if k.startswith(prefix)), f"{prefix} must stay frozen"
    for prefix in trained:  # (not every head moves: nnU-Net gives the coarsest output zero loss weight)
        assert any(m for k, m in moved.items() if k.startswith(prefix)), f"{prefix} must train"
    if issubclass(trainer_class, nnUNetTrainerDiffusionFinetune):  # after the warm-up the whole network trains,
        moved = steps(1)  # the pretrained encoder at 0.1x the learning rate from scratch (encoderLR1: at 1x)
        assert all(m for k, m in moved.items() if k.startswith("encoder.") and k.endswith("conv.weight"))
        rest, encoder = trainer.optimizer.param_groups
        assert encoder["lr"] == pytest.approx(trainer_class.encoder_lr_scale * rest["lr"]) and rest["lr"] > 0
        assert (encoder["lr"] < rest["lr"]) == (trainer_class.encoder_lr_scale < 1)


@pytest.fixture(scope="module")
def trained_transfer_models(nnunet_env, planned_phantom, pretrained_checkpoint):
    fold, held_out = lowlabel_fold(planned_phantom, nnunet_env)
    env = training_env(nnunet_env, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    outputs = {}
    for trainer in TRAINERS:
        weights = [] if trainer == "nnUNetTrainerBudget" else ["-pretrained_weights", str(pretrained_checkpoint)]
        outputs[trainer] = run([command("nnUNetv2_train"), str(planned_phantom["id"]), "2d", str(fold), "-tr", trainer,
                                "-device", "cpu", *weights], env).stdout
    return {"fold": fold, "held_out": held_out, "stdout": outputs, "env": env}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainers_train_predict_and_evaluate_through_nnunet(nnunet_env, planned_phantom, trained_transfer_models,
                                                            trainer, tmp_path):
    fold, held_out = trained_transfer_models["fold"], trained_transfer_models["held_out"]
    stdout = trained_transfer_models["stdout"][trainer]
    if trainer != "nnUNetTrainerBudget":
        assert "loaded" in stdout and "fresh (not in the checkpoint by design)" in stdout
    folder = Path(nnunet_env["nnUNet_results"]) / planned_phantom["name"] / f"{trainer}__nnUNetPlans__2d" / f"fold_{fold}"
    settings = json.loads((folder / "method_settings.json").read_text())
    assert settings["trainer"] == trainer and settings["augmentation"]["mirror_axes"] == [0, 1]
    if trainer in ("nnUNetTrainerDiffusionFinetune", "nnUNetTrainerDiffusionDecoderFinetune"):
        assert f"timestep conditioning folded into the normalisation layers at t*={DEFAULT_TRANSFER_TIMESTEP}" in stdout
        assert settings["transfer_timestep"] == DEFAULT_TRANSFER_TIMESTEP
    if trainer == "nnUNetTrainerDiffusionLinearProbe":  # its timesteps are in the plans prediction rebuilds it from
        assert "Linear probe on timesteps [50, 150, 250]" in stdout
        written = json.loads((folder.parent / "plans.json").read_text())
        assert written["configurations"]["2d"][PROBE_TIMESTEPS_KEY] == [50, 150, 250]
    validation = json.loads((folder / "validation" / "summary.json").read_text())
    assert len(validation["metric_per_case"]) == len(held_out)

    images = tmp_path / "images"
    images.mkdir()
    for case in held_out:
        shutil.copy(planned_phantom["raw"] / "imagesTr" / f"{case}_0000.nii.gz", images)
    predictions = tmp_path / "predictions"
    run([command("nnUNetv2_predict"), "-i", str(images), "-o", str(predictions), "-d", str(planned_phantom["id"]),
         "-c", "2d", "-f", str(fold), "-tr", trainer, "-device", "cpu", "--disable_tta"], nnunet_env)
    for case in held_out:
        predicted = sitk.ReadImage(str(predictions / f"{case}.nii.gz"))
        assert predicted.GetSize() == sitk.ReadImage(str(images / f"{case}_0000.nii.gz")).GetSize()
    run([command("nnUNetv2_evaluate_folder"), str(planned_phantom["preprocessed"] / "gt_segmentations"),
         str(predictions), "-djfile", str(folder.parent / "dataset.json"), "-pfile", str(folder.parent / "plans.json"),
         "-np", "1", "--chill"], nnunet_env)
    summary = json.loads((predictions / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == len(held_out)
    assert set(summary["mean"]) == {"1", "2", "3", "4"} and "Dice" in summary["foreground_mean"]


def test_extend_a_finished_finetuning_with_c(nnunet_env, planned_phantom, trained_transfer_models):
    """More epochs on top of a finished run (interrupted runs: test_crash_resume.py, every trainer)."""
    trainer = "nnUNetTrainerDiffusionLinearProbe"
    fold = trained_transfer_models["fold"]
    env = dict(trained_transfer_models["env"], nnUNet_num_epochs="2")
    result = run([command("nnUNetv2_train"), str(planned_phantom["id"]), "2d", str(fold), "-tr", trainer,
                  "-device", "cpu", "--c"], env)
    assert "Epoch 1" in result.stdout and "Epoch 0" not in result.stdout
    folder = Path(nnunet_env["nnUNet_results"]) / planned_phantom["name"] / f"{trainer}__nnUNetPlans__2d" / \
        f"fold_{fold}"
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 2


def test_finetuning_without_pretrained_weights_is_refused(nnunet_env, planned_phantom, trained_transfer_models):
    env = trained_transfer_models["env"]
    result = run([command("nnUNetv2_train"), str(planned_phantom["id"]), "2d", "0", "-tr",
                  "nnUNetTrainerDiffusionDecoderFinetune", "-device", "cpu"], env, check=False)
    assert result.returncode != 0 and "pass -pretrained_weights" in result.stderr


def test_pretrain_once_finetune_on_another_dataset_with_other_labels(nnunet_env, planned_phantom,
                                                                     pretrained_checkpoint):
    """Dataset 993 has two labels (liver, spleen); it takes dataset 991's plans and then its weights."""
    raw = Path(nnunet_env["nnUNet_raw"]) / "Dataset993_LiverSpleen"
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    for label_file in sorted((planned_phantom["raw"] / "labelsTr").glob("*.nii.gz")):  # 5: nnU-Net needs 5 for its folds
        case = label_file.name[:-len(".nii.gz")]
        shutil.copy(planned_phantom["raw"] / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr")
        label = sitk.ReadImage(str(label_file))
        relabelled = sitk.ChangeLabel(label, {2: 0, 3: 0, 4: 2})
        sitk.WriteImage(relabelled, str(raw / "labelsTr" / label_file.name))
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                  "labels": {"background": 0, "liver": 1, "spleen": 2},
                                                  "numTraining": 5}))
    env = nnunet_env
    run([command("nnUNetv2_extract_fingerprint"), "-d", "993", "-np", "1"], env)
    run([command("nnUNetv2_move_plans_between_datasets"), "-s", "991", "-t", "993", "-sp", "nnUNetPlans",
         "-tp", "nnUNetPlans_from991"], env)
    # nnU-Net 2.8.1's fingerprint extraction does not copy dataset.json, preprocessing needs it
    shutil.copy(raw / "dataset.json", Path(env["nnUNet_preprocessed"]) / raw.name / "dataset.json")
    run([command("nnUNetv2_preprocess"), "-d", "993", "-plans_name", "nnUNetPlans_from991", "-c", "2d", "-np", "1"],
        env)
    train_env = training_env(env, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    result = run([command("nnUNetv2_train"), "993", "2d", "0", "-p", "nnUNetPlans_from991", "-tr",
                  "nnUNetTrainerDiffusionFinetune", "-device", "cpu", "-pretrained_weights",
                  str(pretrained_checkpoint)], train_env)
    assert "Dataset991_TestPhantom" in result.stdout and "fresh (not in the checkpoint by design)" in result.stdout
    # the same checkpoint into a network planned on 993's own statistics is refused
    run([command("nnUNetv2_plan_and_preprocess"), "-d", "993", "-c", "2d", "-np", "1"], env)
    refused = run([command("nnUNetv2_train"), "993", "2d", "0", "-tr", "nnUNetTrainerDiffusionFinetune",
                   "-device", "cpu", "-pretrained_weights", str(pretrained_checkpoint)], train_env, check=False)
    assert refused.returncode != 0 and "pretrained for other plans" in refused.stderr
    assert os.path.exists(pretrained_checkpoint)
