"""``nnUNetv2_diffusion_benchmark --folds``: cross-validated held-out groups, each with its own
pretraining, every other volume as the labelled choice, and a combined report. In a file of its
own so that the test runner can run it beside the other end-to-end benchmark test."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import command, run
from nnunet_diffusion_pretrain.evaluation.run_catalogue import FINETUNE, STOCK
from nnunet_diffusion_pretrain.phantom import write_phantom_dataset


def test_cross_validated_benchmark_tests_every_volume_once(nnunet_env, tmp_path):
    """--folds 2 on 4 phantom volumes: two held-out pairs, each fold pretrains on its other two
    volumes and uses each of them as the labelled volume; the combined report pairs all of it.
    Two arms (--methods stock finetune), as a many-fold study on a CPU would run."""
    dataset = tmp_path / "source_raw" / "Dataset982_CVPhantom"
    write_phantom_dataset(dataset, num_labelled=4, unlabeled_folder=tmp_path / "unlabeled", num_unlabeled=2, seed=5,
                          shape=(12, 40, 40))
    work, out = tmp_path / "work", tmp_path / "report"
    args = [command("nnUNetv2_diffusion_benchmark"), "--raw-dataset", str(dataset), "--unlabeled",
            str(tmp_path / "unlabeled"), "--folds", "2", "--num-labeled", "1", "--num-labeled-slices",
            "--synthetic-images", "0", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--max-budget-doublings",
            "0", "--iterations-per-epoch", "2", "--methods", "finetune", "stock", "-w", str(work), "-o", str(out)]
    env = dict(nnunet_env, nnUNet_diffusion_num_samples="2")
    both = run([*args, "--num-held-out", "1"], nnunet_env, check=False)
    assert both.returncode != 0 and "drop --num-held-out" in both.stderr and not work.exists()
    unpaired = run([*args, "--methods", "finetune", "probe"], env, check=False)
    assert unpaired.returncode != 0 and unpaired.stderr.strip().splitlines()[-1].endswith(
        "--methods must include stock: every other arm is paired with it") and not work.exists()
    without_labeller = run([*args, "--methods", "stock", "--synthetic-images", "2"], env, check=False)
    assert without_labeller.returncode != 0 and "add finetune to --methods" in without_labeller.stderr \
        and not work.exists()
    too_many = run([*args, "--repeats", "3"], env, check=False)
    assert too_many.returncode != 0 and "only 2 volumes outside its held-out group" in too_many.stderr

    # --repeats 1: one labelled choice per fold, then (the same command without it) every other one
    run([*args, "--repeats", "1"], env, timeout=2400)
    first = json.loads((out / "results.json").read_text())
    for k in range(2):
        fold_runs = [r for r in first["runs"] if r["cv_fold"] == k and r["kind"] == "cases"]
        assert len({r["train"][0] for r in fold_runs}) == 1 and len(fold_runs) == 2  # 2 methods, 1 choice
        assert {r["method"] for r in fold_runs} == {STOCK, FINETUNE}
    run(args, env, timeout=2400)

    results = json.loads((out / "results.json").read_text())
    held_out = [f["held_out"] for f in results["folds"]]
    assert sorted(sum(held_out, [])) == [f"phantom_{i:03d}" for i in range(4)], "every volume held out once"
    for k, fold in enumerate(results["folds"]):
        assert fold["pending_runs"] == [] and (out / fold["report"]).is_file()
        fold_runs = [r for r in results["runs"] if r["cv_fold"] == k and r["kind"] == "cases"]
        choices = {r["train"][0] for r in fold_runs}
        assert choices == {c for c in sum(held_out, []) if c not in fold["held_out"]}, "each other volume once"
        assert all(sorted(r["cases"]) == fold["held_out"] for r in fold_runs)
        log = next((work / f"fold_{k}" / "nnUNet_results").glob("*/nnUNetTrainerDiffusionPretrain__*/fold_*/"
                                                                 "training_log_*")).read_text()
        assert "Pretraining images: 2 labelled cases" in log  # its own pretraining, without its held-out pair
    (budget,) = [g for g in results["summary"]["budgets"] if g["kind"] == "cases"]
    assert sorted(budget["methods"]) == sorted([STOCK, FINETUNE])
    for method, entry in budget["methods"].items():
        assert entry["repeats"] == 4
        shares = entry["variance"]["shares_of_sum_of_squares"]
        assert shares["pretraining_run"] is not None and sum(shares.values()) == pytest.approx(1.0)
        if method != STOCK:
            assert entry["paired"]["n_pairs"] == 8  # 2 folds x 2 labelled choices x 2 held-out cases
            diff_shares = entry["paired"]["variance"]["shares_of_sum_of_squares"]
            assert diff_shares["pretraining_run"] is not None and sum(diff_shares.values()) == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert "2 folds" in report and "fold_0/report.md" in report and "95% CI" in report
    assert "diffusion: fine-tune all - stock (paired difference)" in report

    # the next session's machine: fold 0's work folder is gone, its committed report is complete
    fold_0_report = (out / "fold_0" / "results.json").read_text()
    shutil.rmtree(work / "fold_0")
    again = run(args, env, timeout=600)
    assert "fold 0: " in again.stdout and "not run again" in again.stdout
    assert not (work / "fold_0" / "nnUNet_results").exists(), "fold 0 trained again"
    assert (out / "fold_0" / "results.json").read_text() == fold_0_report
    assert json.loads((out / "results.json").read_text())["summary"] == results["summary"]
