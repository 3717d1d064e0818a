"""Pretraining and fine-tuning under DDP (what ``-num_gpus 2`` runs), on CPU with gloo and two processes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import command, lowlabel_fold, run, training_env
from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely

SCRIPT = Path(__file__).resolve().parent / "distributed_training.py"
EPOCHS, ITERATIONS = 2, 3


def ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def ddp_runs(nnunet_env, planned_phantom, tmp_path_factory):
    run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", str(planned_phantom["id"]), "-c", "2d",
         "-i", str(planned_phantom["unlabeled"])], nnunet_env)
    results = tmp_path_factory.mktemp("ddp_results")
    env = dict(training_env(nnunet_env, num_iterations_per_epoch=ITERATIONS, num_val_iterations_per_epoch=1),
               nnUNet_results=str(results), nnUNet_diffusion_num_samples="2")
    first, resumed = tmp_path_factory.mktemp("ddp_first"), tmp_path_factory.mktemp("ddp_resumed")
    args = [sys.executable, str(SCRIPT), "nnUNetTrainerDiffusionPretrain", str(planned_phantom["id"]), "2d", "all"]
    run([*args, str(first)], dict(env, nnUNet_num_epochs=str(EPOCHS)), timeout=600)  # a deadlock fails here
    folder = results / planned_phantom["name"] / "nnUNetTrainerDiffusionPretrain__nnUNetPlans__2d" / "fold_all"
    after_first = {"files": sorted(p.name for p in folder.iterdir()),
                   "checkpoint": load_checkpoint_safely(folder / "checkpoint_final.pth")}
    run([*args, str(resumed), "--c"], dict(env, nnUNet_num_epochs=str(EPOCHS + 1)), timeout=600)
    return {"first": ranks(first), "after_first": after_first, "resumed": ranks(resumed), "folder": folder}


def test_ranks_hold_identical_weights_and_ema(ddp_runs):
    for rank0, rank1 in (ddp_runs["first"], ddp_runs["resumed"]):
        assert rank0["weights_sha256"] == rank1["weights_sha256"], "DDP must keep the online weights in sync"
        assert rank0["ema_sha256"] == rank1["ema_sha256"], "EMA must stay consistent across ranks"
        assert rank0["ema_sha256"] != rank0["weights_sha256"]
        assert rank0["val_losses"] == rank1["val_losses"], "held-out losses are gathered from every rank"


def test_each_rank_takes_half_the_batch_and_counts_the_same_steps(ddp_runs, planned_phantom):
    plans = json.loads((planned_phantom["preprocessed"] / "nnUNetPlans.json").read_text())
    global_batch = plans["configurations"]["2d"]["batch_size"]
    rank0, rank1 = ddp_runs["first"]
    assert rank0["batch_size"] + rank1["batch_size"] == global_batch
    assert rank0["ema_optimization_step"] == rank1["ema_optimization_step"] == EPOCHS * ITERATIONS


def test_rank_zero_alone_writes_checkpoints_logs_and_samples(ddp_runs):
    files = ddp_runs["after_first"]["files"]
    assert "checkpoint_final.pth" in files and "samples" in files
    assert sum(f.startswith("training_log") for f in files) == 1, files
    assert not any(f.endswith(".partial") for f in files)
    checkpoint = ddp_runs["after_first"]["checkpoint"]
    assert checkpoint["current_epoch"] == EPOCHS
    assert not any(k.startswith("module.") for k in checkpoint["network_weights"]), "saved without the DDP wrapper"


def test_resume_under_ddp_continues_the_ema_and_epoch_count(ddp_runs):
    rank0, rank1 = ddp_runs["resumed"]
    assert rank0["current_epoch"] == rank1["current_epoch"] == EPOCHS + 1
    assert rank0["ema_optimization_step"] == rank1["ema_optimization_step"] == (EPOCHS + 1) * ITERATIONS
    assert len(rank0["val_losses"]) == EPOCHS + 1
    final = load_checkpoint_safely(ddp_runs["folder"] / "checkpoint_final.pth")
    assert final["current_epoch"] == EPOCHS + 1


def test_finetuning_after_a_decoder_warmup_keeps_ranks_bit_identical(nnunet_env, planned_phantom, ddp_runs,
                                                                      tmp_path):
    """The encoder is frozen for the first epoch (the decoder warm-up), then trains: DDP must
    reduce exactly the parameters that train in each phase, or it stops (or the ranks drift)."""
    fold, _ = lowlabel_fold(planned_phantom, nnunet_env)
    results = tmp_path / "results"
    env = dict(training_env(nnunet_env, num_epochs=4, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1),
               nnUNet_results=str(results))
    pretrained = ddp_runs["folder"] / "checkpoint_final.pth"
    run([sys.executable, str(SCRIPT), "nnUNetTrainerDiffusionFinetune", str(planned_phantom["id"]), "2d", str(fold),
         str(tmp_path / "out"), "--pretrained_weights", str(pretrained)], env, timeout=600)
    rank0, rank1 = ranks(tmp_path / "out")
    assert rank0["current_epoch"] == rank1["current_epoch"] == 4
    assert rank0["weights_sha256"] == rank1["weights_sha256"], "the ranks' weights must stay bit-identical"
    log = next((results / planned_phantom["name"] / "nnUNetTrainerDiffusionFinetune__nnUNetPlans__2d" /
                f"fold_{fold}").glob("training_log_*.txt")).read_text()
    assert "Frozen from epoch 0: encoder.*" in log and "Frozen from epoch 1: nothing" in log
