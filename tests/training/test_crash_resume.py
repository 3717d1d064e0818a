"""SIGKILL at random points, then resume: trainings (during an epoch and in the middle of a
checkpoint write) and the unlabeled-pool preparation, through the real commands.

A killed ``nnUNetv2_train`` resumed with ``--c`` must end with the epochs of an uninterrupted
run; a checkpoint write cut short must leave the previous checkpoint loadable; an interrupted
pool run must never expose a half-written case."""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import command, kill_when, lowlabel_fold, run, training_env
from nnunet_diffusion_pretrain.phantom import make_phantom_volume

EPOCHS, ITERATIONS = 4, 2
PAUSE = "1.5"  # seconds a paused checkpoint write stays half written
NUM_POOL_SCANS = 40


def log_mentions(folder: Path, text: str, then_wait: float = 0.0) -> Callable[[], bool]:
    """True ``then_wait`` seconds after the training log first contains ``text`` (nnU-Net ends each
    logged line with a space and a newline)."""
    seen: list[float] = []

    def condition() -> bool:
        if not seen and any(text in p.read_text() for p in folder.glob("training_log_*.txt")):
            seen.append(time.time())
        return bool(seen) and time.time() - seen[0] >= then_wait
    return condition


def load(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=False, map_location="cpu")  # stock checkpoints hold numpy values


def kill_mid_write_then_mid_epoch_then_finish(first: list[str], train: list[str], env: dict, folder: Path,
                                              tmp_path: Path) -> dict:
    """Kill 1: during the second write of checkpoint_latest (the first must survive intact). Kill 2:
    a random moment of a later epoch. Then ``--c`` to the end. Returns the final checkpoint."""
    latest, partial = folder / "checkpoint_latest.pth", folder / "checkpoint_latest.pth.partial"
    kill_when(first, dict(env, nnUNet_test_checkpoint_pause=PAUSE), lambda: latest.is_file() and partial.is_file(),
              tmp_path / "killed_in_write.log")
    assert partial.is_file(), "the kill should have hit the write"
    with pytest.raises(Exception):
        load(partial)  # half written
    assert load(latest)["current_epoch"] == 1  # the previous checkpoint, untouched by the interrupted write

    delay = random.Random(os.getpid()).uniform(0.0, 0.3)
    kill_when([*train, "--c"], env, log_mentions(folder, f"Epoch {EPOCHS - 2} \n", delay),
              tmp_path / "killed_in_epoch.log")
    assert load(latest)["current_epoch"] in (EPOCHS - 2, EPOCHS - 1)
    assert not (folder / "checkpoint_final.pth").exists()

    run([*train, "--c"], env)
    final = load(folder / "checkpoint_final.pth")
    assert final["current_epoch"] == EPOCHS  # as an uninterrupted run
    assert len(final["logging"]["train_losses"]) == EPOCHS
    assert not latest.exists()  # nnU-Net removes it after a finished run
    return final


@pytest.fixture
def short_training(nnunet_env):
    return training_env(nnunet_env, num_epochs=EPOCHS, num_iterations_per_epoch=ITERATIONS,
                        num_val_iterations_per_epoch=1, save_every=1)


def test_pretraining_survives_kills_in_a_checkpoint_write_and_in_an_epoch(short_training, planned_phantom,
                                                                           tmp_path):
    trainer = "nnUNetTrainerDiffusionPretrainPaused"
    env = dict(short_training, nnUNet_diffusion_num_samples="1")
    run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", str(planned_phantom["id"]), "-c", "2d",
         "-i", str(planned_phantom["unlabeled"])], env)
    folder = Path(env["nnUNet_results"]) / planned_phantom["name"] / f"{trainer}__nnUNetPlans__2d" / "fold_all"
    train = [command("nnUNetv2_train"), str(planned_phantom["id"]), "2d", "all", "-tr", trainer, "-device", "cpu"]
    final = kill_mid_write_then_mid_epoch_then_finish(train, train, env, folder, tmp_path)
    assert final["ema_state"]["optimization_step"] == EPOCHS * ITERATIONS  # EMA resumed, not restarted
    assert (folder / "samples" / "samples.png").is_file()


@pytest.mark.parametrize("trainer", ["nnUNetTrainerDiffusionFinetunePaused",
                                     "nnUNetTrainerDiffusionDecoderFinetunePaused",
                                     "nnUNetTrainerDiffusionLinearProbePaused"])
def test_finetuning_survives_kills_in_a_checkpoint_write_and_in_an_epoch(trainer, short_training, planned_phantom,
                                                                         pretrained_checkpoint, tmp_path):
    fold, held_out = lowlabel_fold(planned_phantom, short_training)
    folder = Path(short_training["nnUNet_results"]) / planned_phantom["name"] / f"{trainer}__nnUNetPlans__2d" / \
        f"fold_{fold}"
    train = [command("nnUNetv2_train"), str(planned_phantom["id"]), "2d", str(fold), "-tr", trainer, "-device", "cpu"]
    first = [*train, "-pretrained_weights", str(pretrained_checkpoint)]
    kill_mid_write_then_mid_epoch_then_finish(first, train, short_training, folder, tmp_path)
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    assert sorted(m["prediction_file"].split("/")[-1].split(".")[0] for m in summary["metric_per_case"]) == \
        sorted(held_out)
    assert "Pretrained weights from" in " ".join(p.read_text() for p in folder.glob("training_log_*.txt"))


def test_interrupted_pool_run_never_exposes_a_half_written_case(nnunet_env, planned_phantom, tmp_path):
    scans, rng = tmp_path / "scans", np.random.default_rng(11)
    scans.mkdir()
    for i in range(NUM_POOL_SCANS):  # enough that the kill lands while most are still to do
        image = sitk.GetImageFromArray(make_phantom_volume(rng, (16, 48, 48))[0])
        image.SetSpacing((6.0, 6.0, 8.0))
        sitk.WriteImage(image, str(scans / f"scan_{i:02d}.nii.gz"))
    env = dict(nnunet_env, nnUNet_diffusion_pool=str(tmp_path / "pool"))
    args = [command("nnUNetv2_diffusion_add_unlabeled"), "-d", str(planned_phantom["id"]), "-c", "2d",
            "-i", str(scans)]
    pool = tmp_path / "pool" / planned_phantom["name"] / "nnUNetPlans_2d"
    staged = lambda: any((pool / ".staging").glob("*.json"))  # noqa: E731 (mid-run: the first case staged)
    kill_when(args, env, staged, tmp_path / "killed.log")
    manifest = json.loads((pool / "pool.json").read_text())
    assert manifest["cases"] == {}  # nothing half-done is listed, so nothing half-done is ever trained on
    run(args, env)
    manifest = json.loads((pool / "pool.json").read_text())
    assert len(manifest["cases"]) == NUM_POOL_SCANS
    assert sorted(p.name for p in pool.glob("*.b2nd")) == sorted(f"{c}.b2nd" for c in manifest["cases"])
    assert not list((pool / ".staging").iterdir())
