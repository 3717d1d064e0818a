"""Choosing a segmentation budget on a validation volume of the training split, never on the
held-out cases: stock nnU-Net trains on every training volume but one and is validated on that one.
A budget is long enough when it learns every organ (Dice >= ORGAN_LEARNED_DICE). The ``cpu``
preset's 1,600 iterations do on the CT subset but not on the MRI set, which needs 3,200
(``benchmarks/results/budget_calibration/``), so the benchmark doubles the budget until they do.
Where a budget is at the edge (1,600 on that MRI set) two runs of it disagree: one learned every
organ, the other missed the left kidney (``chaos20_benchmark_calibration/``). So a budget is chosen
only when each of ``calibration_runs`` runs of it learns every organ (per organ the worse run
counts); a run that misses an organ ends its step at once. With two runs the MRI set gets 3,200
(``chaos20_calibration_two_runs/``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nnunet_diffusion_pretrain.evaluation.run_catalogue import start_arguments
from nnunet_diffusion_pretrain.subprocess_steps import console_script, run_step
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import append_fold, write_json_atomically

ORGAN_LEARNED_DICE = 0.5


def add_calibration_fold(preprocessed: Path, training: list[str],
                         num_val: int = 1) -> tuple[int, list[str], list[str]]:
    """Appends (or finds) the fold training on all of ``training`` but its last ``num_val`` cases and
    validating on those; returns (fold, train, val)."""
    if len(training) <= num_val:
        raise UserFacingError(f"calibrating the budget needs at least {num_val + 1} training volumes "
                              f"({len(training)} here); give the budget with --finetune-epochs and "
                              f"--max-budget-doublings 0")
    train, val = sorted(training[:-num_val]), training[-num_val:]
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    fold = append_fold(splits, train, val)
    write_json_atomically(preprocessed / "splits_final.json", splits)
    return fold, train, val


def run_name(iterations: int, repeat: int = 1, tag: str = "") -> str:
    """``calibration_ITERATIONS``, ``tag`` (a setting given by the environment, e.g. ``_t50``) and
    ``_runR`` for the R-th run of a budget appended: names the kept fold folder and the log of that run."""
    return f"calibration_{iterations}{tag}" + (f"_run{repeat}" if repeat > 1 else "")


def calibration_run(results_dataset: Path, trainer: str, plans: str, configuration: str, fold: int,
                    iterations: int, env: dict, log: Path, device: str = "cpu", pretrained: Path | None = None,
                    repeat: int = 1, tag: str = "") -> Path:
    """Trains (or finishes) ``trainer`` on the calibration fold with the budget in ``env``, then moves
    nnU-Net's fold folder to ``fold_N_calibration_ITERATIONS`` (``..._runR`` for the R-th run of a
    budget), so the same fold can be trained again; returns that folder (with the run's seconds in
    ``seconds.txt``)."""
    trainer_folder = results_dataset / f"{trainer}__{plans}__{configuration}"
    kept = trainer_folder / f"fold_{fold}_{run_name(iterations, repeat, tag)}"
    if (kept / "validation" / "summary.json").is_file():
        return kept
    running = trainer_folder / f"fold_{fold}"
    start = start_arguments(running, pretrained)
    seconds = run_step(f"budget calibration: {trainer}, {iterations} iterations, fold {fold}", [
        console_script("nnUNetv2_train"), results_dataset.name[7:10], configuration, str(fold), "-tr", trainer,
        "-p", plans, "-device", device, *start], env, log)
    shutil.move(running, kept)
    (kept / "seconds.txt").write_text(f"{seconds:.1f}\n")
    return kept


def validation_dice(kept: Path, labels: dict) -> dict[str, float]:
    """Dice per organ name of a calibration run's final validation (nnU-Net's own summary.json)."""
    summary = json.loads((kept / "validation" / "summary.json").read_text())
    names = {str(v): k for k, v in labels.items() if isinstance(v, int) and v != 0}
    return {names[k]: v["Dice"] for k, v in summary["mean"].items() if k in names}


def run_seconds(kept: Path) -> float:
    return float((kept / "seconds.txt").read_text())


def unlearned_organs(dice: dict[str, float]) -> list[str]:
    return [organ for organ, d in dice.items() if d < ORGAN_LEARNED_DICE]


def worst_dice(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per organ the lowest Dice over a budget's runs: one run that misses an organ is enough to
    call the budget too short."""
    return {organ: min(run[organ] for run in runs) for organ in runs[0]}


def needs_another_run(runs: list[dict[str, float]], runs_per_budget: int) -> bool:
    """Whether a budget needs another calibration run: fewer than ``runs_per_budget`` so far, and
    none of them has missed an organ yet (a miss already decides)."""
    return len(runs) < runs_per_budget and not unlearned_organs(worst_dice(runs))
