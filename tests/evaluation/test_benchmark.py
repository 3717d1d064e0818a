"""The benchmark command end to end on a tiny phantom (every phase, resume, report), and its
parts on constructed inputs with known answers (reduced configuration, Dice/NSD, paired tests)."""
from __future__ import annotations

import copy
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import command, kill_when, run
from nnunet_diffusion_pretrain.evaluation.budget_calibration import add_calibration_fold, needs_another_run, worst_dice
from nnunet_diffusion_pretrain.evaluation.paired_statistics import verdict
from nnunet_diffusion_pretrain.evaluation.reduced_configuration import add_configuration, reduced_2d_configuration
from nnunet_diffusion_pretrain.evaluation.report import budgets_line, summarize
from nnunet_diffusion_pretrain.evaluation.run_catalogue import METHODS, STOCK, SYNTHETIC, TrainingRun
from nnunet_diffusion_pretrain.evaluation.segmentation_metrics import organ_metrics
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.phantom import write_phantom_dataset
from nnunet_diffusion_pretrain.transfer.pretrained_transfer import DEFAULT_TRANSFER_TIMESTEP

LABELS = {"background": 0, "liver": 1, "spleen": 2}


def _plans() -> dict:
    kwargs = {"n_stages": 7, "features_per_stage": [32, 64, 128, 256, 512, 512, 512],
              "strides": [[1, 1]] + [[2, 2]] * 6, "kernel_sizes": [[3, 3]] * 7, "n_conv_per_stage": [2] * 7,
              "n_conv_per_stage_decoder": [2] * 6, "conv_bias": True}
    return {"configurations": {"2d": {"spacing": [0.8, 0.8], "median_image_size_in_voxels": [512, 480],
                                      "patch_size": [512, 512], "batch_size": 12,
                                      "architecture": {"network_class_name": "PlainConvUNet",
                                                       "arch_kwargs": kwargs}}}}


def test_reduced_configuration_inherits_from_2d_and_scales_spacing_to_the_patch(tmp_path):
    plans = _plans()
    entry = reduced_2d_configuration(plans, "nnUNetPlansAxial", "2d_cpu", 128, 8, 5, 16, 128)
    assert entry["inherits_from"] == "2d" and entry["data_identifier"] == "nnUNetPlansAxial_2d_cpu"
    assert entry["spacing"] == pytest.approx([3.2, 3.2])  # 512 voxels -> 128
    assert entry["patch_size"] == [128, 128] and entry["batch_size"] == 8
    kwargs = entry["architecture"]["arch_kwargs"]
    assert kwargs["features_per_stage"] == [16, 32, 64, 128, 128]
    assert len(kwargs["n_conv_per_stage"]) == 5 and len(kwargs["n_conv_per_stage_decoder"]) == 4
    assert len(kwargs["strides"]) == 5 and len(kwargs["kernel_sizes"]) == 5
    assert plans == _plans()  # the input is not modified
    with pytest.raises(UserFacingError, match="divisible"):
        reduced_2d_configuration(plans, "p", "c", 100, 8, 5, 16, 128)
    deep = reduced_2d_configuration(plans, "p", "c", 256, 8, 9, 16, 128)  # more stages than planned: planned
    assert deep["architecture"]["arch_kwargs"]["n_stages"] == 7 and deep["patch_size"] == [256, 256]
    plans_small = _plans()
    plans_small["configurations"]["2d"]["median_image_size_in_voxels"] = [40, 100]
    small = reduced_2d_configuration(plans_small, "p", "c", 128, 8, 5, 16, 128)
    assert small["spacing"] == [0.8, 0.8] and small["patch_size"] == [48, 112]  # covers 40 x 100, divisible by 16

    plans_file = tmp_path / "plans.json"
    plans_file.write_text(json.dumps(plans))
    add_configuration(plans_file, "2d_cpu", entry)
    add_configuration(plans_file, "2d_cpu", entry)  # the same again: nothing changes
    assert json.loads(plans_file.read_text())["configurations"]["2d_cpu"] == entry
    other = copy.deepcopy(entry) | {"batch_size": 4}
    before = plans_file.read_bytes()
    with pytest.raises(UserFacingError, match="different configuration"):
        add_configuration(plans_file, "2d_cpu", other)
    assert plans_file.read_bytes() == before


def _write(seg: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> str:
    image = sitk.GetImageFromArray(seg.astype(np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return str(path)


def test_dice_and_nsd_on_shifted_cubes(tmp_path):
    reference = np.zeros((20, 30, 30), np.uint8)
    reference[5:15, 5:15, 5:15] = 1  # liver: a 10^3 cube; spleen absent from the reference
    shifted = np.zeros_like(reference)
    shifted[5:15, 5:15, 7:17] = 1  # shifted by 2 voxels along x
    ref = _write(reference, tmp_path / "ref.nii.gz")
    same = organ_metrics(ref, ref, LABELS, tolerance_mm=1.0)
    assert same == {"liver": {"dice": 1.0, "nsd": 1.0}, "spleen": {"dice": 1.0, "nsd": 1.0}}
    moved = organ_metrics(_write(shifted, tmp_path / "a.nii.gz"), ref, LABELS, tolerance_mm=1.0)
    assert moved["liver"]["dice"] == pytest.approx(0.8)  # overlap 8/10 along x
    assert 0.2 < moved["liver"]["nsd"] < 0.95
    # a tolerance larger than the shift (in mm: spacing 1.5 mm -> 3 mm shift) counts every surface point
    ref15 = _write(reference, tmp_path / "ref15.nii.gz", (1.5, 1.5, 1.5))
    tolerant = organ_metrics(_write(shifted, tmp_path / "b.nii.gz", (1.5, 1.5, 1.5)), ref15, LABELS, 3.1)
    assert tolerant["liver"]["nsd"] == pytest.approx(1.0)
    strict = organ_metrics(str(tmp_path / "b.nii.gz"), ref15, LABELS, 1.0)
    assert strict["liver"]["nsd"] < tolerant["liver"]["nsd"]
    spurious = shifted.copy()
    spurious[0:2, 0:2, 0:2] = 2  # a spleen where the reference has none
    assert organ_metrics(_write(spurious, tmp_path / "c.nii.gz"), ref, LABELS, 1.0)["spleen"] == \
        {"dice": 0.0, "nsd": 0.0}


def test_summary_pairs_cases_with_stock_and_reports_spread():
    runs, metrics = [], {}
    rng = np.random.default_rng(0)
    for repeat in range(3):
        for method, offset in zip(METHODS, (0.0, 0.1, 0.0, -0.05, 0.05)):  # METHODS[4]: fine-tune all + synthetic
            run_ = TrainingRun(method, "cases", 1.0, repeat, "Dataset1_X", 5 + repeat, ("a",))
            runs.append(run_)
            cases = {}
            for case in ("h1", "h2", "h3", "h4"):
                base = 0.5 + 0.1 * repeat + rng.uniform(0, 0.01) * (method == STOCK)
                cases[case] = {"liver": {"dice": base + offset, "nsd": base}, "spleen": {"dice": base + offset,
                                                                                         "nsd": base}}
            metrics[run_.run_id] = {"cases": cases}
    summary = summarize(runs, metrics)["budgets"][0]
    assert summary["label"] == "1 volume"
    finetune = summary["methods"][METHODS[1]]
    assert finetune["dice"]["per_repeat"] == pytest.approx([0.6, 0.7, 0.8], abs=0.011)
    assert finetune["dice"]["std"] == pytest.approx(0.1, abs=0.01)
    test = finetune["paired"]
    assert test["n_pairs"] == 12 and test["wins"] == 12 and test["wilcoxon_p"] < 0.001
    assert 0 < test["ci95"][0] <= test["mean_diff"] <= test["ci95"][1] and verdict(test) == "beats stock"
    probe = summary["methods"][METHODS[3]]["paired"]
    assert probe["losses"] == 12 and probe["mean_diff"] == pytest.approx(-0.05, abs=0.011)
    assert verdict(probe) == "worse than stock"
    synthetic = summary["methods"][SYNTHETIC]["vs_finetune_dice"]  # judged against the same method without images
    assert synthetic["losses"] == 12 and synthetic["mean_diff"] == pytest.approx(-0.05, abs=1e-9)
    shares = finetune["variance"]["shares_of_sum_of_squares"]  # the repeats differ by 0.1, the cases not at all
    assert shares["labelled_choice"] == pytest.approx(1.0) and shares["held_out_case"] == pytest.approx(0.0)
    assert shares["pretraining_run"] is None
    assert "vs_finetune_dice" not in finetune


def test_budgets_line_counts_the_repeats_each_budget_has():
    # a work folder extended in place: 6 repeats of 4 slices, the 1-volume budget left at its 3
    runs = [TrainingRun(STOCK, "slices", 4.0, r, "Dataset2_X", r, ("a",)) for r in range(6)]
    runs += [TrainingRun(m, "cases", 1.0, r, "Dataset1_X", 5 + r, ("a",)) for r in range(3) for m in METHODS[:2]]
    runs.append(TrainingRun(STOCK, "all", 3.0, 0, "Dataset1_X", 9, ("a", "b", "c")))
    assert budgets_line(runs).startswith("- Budgets: 4 slices x 6 repeat(s), 1 volume x 3 repeat(s) (")


def test_calibration_budget_counts_its_worse_run_and_stops_at_the_first_miss():
    learned, missed = {"liver": 0.9, "spleen": 0.7}, {"liver": 0.95, "spleen": 0.08}
    assert worst_dice([learned, missed]) == {"liver": 0.9, "spleen": 0.08}
    assert needs_another_run([learned], 2)  # learned once: confirm with a second run
    assert not needs_another_run([learned, learned], 2)  # both learned: the budget is chosen
    assert not needs_another_run([missed], 2)  # one miss decides: double without a second run
    assert not needs_another_run([learned], 1)


def test_calibration_fold_validates_on_the_last_training_volumes_and_is_appended_once(tmp_path):
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["a", "b"], "val": ["c"]}]))
    assert add_calibration_fold(tmp_path, ["b", "a", "c", "d"], num_val=2) == (1, ["a", "b"], ["c", "d"])
    assert add_calibration_fold(tmp_path, ["a", "b", "c", "d"], num_val=2)[0] == 1  # found, not appended again
    assert add_calibration_fold(tmp_path, ["a", "b", "c", "d"]) == (2, ["a", "b", "c"], ["d"])
    assert len(json.loads((tmp_path / "splits_final.json").read_text())) == 3
    with pytest.raises(UserFacingError, match="at least 3 training volumes"):
        add_calibration_fold(tmp_path, ["a", "b"], num_val=2)


def test_benchmark_command_end_to_end_kill_and_resume(nnunet_env, tmp_path):
    raw_root, unlabeled = tmp_path / "source_raw", tmp_path / "unlabeled"
    dataset = raw_root / "Dataset981_BenchPhantom"
    write_phantom_dataset(dataset, num_labelled=6, unlabeled_folder=unlabeled, num_unlabeled=3, seed=3,
                          shape=(16, 48, 48))
    work, out = tmp_path / "work", tmp_path / "report"
    args = [command("nnUNetv2_diffusion_benchmark"), "--raw-dataset", str(dataset), "--unlabeled", str(unlabeled),
            "--num-held-out", "2", "--num-labeled", "--num-labeled-slices", "4", "--repeats", "1",
            "--synthetic-images", "2",
            "--pretrain-epochs", "1", "--finetune-epochs", "1", "--max-budget-doublings", "1",
            "--calibration-runs", "2",
            "--iterations-per-epoch", "3", "-w", str(work), "-o", str(out)]
    # Ctrl-C in the middle of the second segmentation run, then the same command finishes the job
    def second_run_training() -> bool:
        logs = (work / "logs").glob("nnUNetTrainer*__*.log")
        return (out / "report.md").is_file() and sum("Epoch 0" in log.read_text(errors="replace") for log in logs) >= 2
    kill_when(args, nnunet_env, second_run_training, tmp_path / "killed.log", timeout=1800, sig=signal.SIGINT)
    killed_state = json.loads((work / "benchmark_state.json").read_text())
    assert "pretraining" in killed_state["phases"]
    # what finished before the kill is reported, and the report says it is partial
    partial = json.loads((out / "results.json").read_text())
    assert len(partial["runs"]) == 1 and len(partial["pending_runs"]) == len(METHODS)
    assert "Partial report: 1 of 6 runs finished" in (out / "report.md").read_text()
    # the stopped run's time is kept: wall times count every attempt
    stopped = set(killed_state["runs"]) - {r["run_id"] for r in partial["runs"]}
    assert len(stopped) == 1
    stopped_id = stopped.pop()
    assert killed_state["runs"][stopped_id] > 0
    run(args, nnunet_env, timeout=1800)

    results = json.loads((out / "results.json").read_text())
    assert results["wall_time_s"]["runs"][stopped_id] > killed_state["runs"][stopped_id]
    assert results["pending_runs"] == [] and "Partial report" not in (out / "report.md").read_text()
    assert len(results["held_out"]) == 2
    assert len(results["runs"]) == len(METHODS) + 1  # 4 slices (4 trainers + synthetic row), upper bound (stock)
    synthetic = next(r for r in results["runs"] if r["method"] == SYNTHETIC)
    derived = work / "nnUNet_raw" / synthetic["dataset"]
    assert len(list((derived / "labelsTr").glob("synthetic_*.nii.gz"))) == 2
    upper = [r for r in results["runs"] if r["kind"] == "all"]
    assert [u["method"] for u in upper] == [STOCK] and len(upper[0]["train"]) == 4
    for r in results["runs"]:
        assert sorted(r["cases"]) == sorted(results["held_out"])  # evaluated on exactly the held-out cases
        assert not set(r["train"]) & set(results["held_out"])
        for organ in r["cases"][results["held_out"][0]].values():
            assert 0.0 <= organ["dice"] <= 1.0 and 0.0 <= organ["nsd"] <= 1.0
    assert results["settings"]["preset"]["finetune_epochs"] == 1
    # the phantom's kidneys have a side: every arm, stock included, keeps left and right apart
    assert results["settings"]["keep_sides"] is True
    assert results["settings"]["sided_labels"] == ["right_kidney", "left_kidney"]
    for r in results["runs"]:
        assert r["trainer"].endswith("_keepSides") and r["method_settings"]["trainer"] == r["trainer"]
        assert r["method_settings"]["augmentation"] == {"rotation_degrees": [-15.0, 15.0], "mirror_axes": [],
                                                        "tta_mirror_axes": []}
        folds_conditioning = "DecoderFinetune" in r["trainer"] or "DiffusionFinetune" in r["trainer"]
        assert (r["method_settings"].get("transfer_timestep") == DEFAULT_TRANSFER_TIMESTEP) == folds_conditioning
    # the budget was calibrated first, on a training volume: doubled once if an organ was not learned
    calibration = results["budget_calibration"]
    steps = calibration["steps"]
    assert [s["iterations"] for s in steps] == [3 * 2 ** i for i in range(len(steps))]
    assert len(steps) == (2 if steps[0]["unlearned"] else 1) and calibration["chosen_epochs"] == steps[-1]["epochs"]
    organs = [k for k, v in json.loads((dataset / "dataset.json").read_text())["labels"].items() if v]
    assert sorted(steps[0]["dice"]) == sorted(organs)
    for s in steps:  # a second run only confirms a budget whose first run learned every organ
        assert len(s["runs"]) == (1 if min(s["runs"][0].values()) < 0.5 else 2)
        assert s["dice"] == {o: min(r[o] for r in s["runs"]) for o in organs}
        assert s["unlearned"] == [o for o in s["dice"] if s["dice"][o] < 0.5]
    assert sorted(calibration["train"] + calibration["val"]) == sorted(upper[0]["train"]) and len(calibration["val"]) == 1
    calibrated = work / "nnUNet_results" / dataset.name / "nnUNetTrainerBudget_keepSides__nnUNetPlansAxial__2d_cpu"
    for s in steps:
        for r in range(1, len(s["runs"]) + 1):
            kept = f"fold_{calibration['fold']}_calibration_{s['iterations']}" + (f"_run{r}" if r > 1 else "")
            assert (calibrated / kept / "validation" / "summary.json").is_file()
    last_epoch = calibration["chosen_epochs"] - 1  # every run trained with the chosen budget
    for log in (work / "logs").glob("nnUNetTrainer*__*.log"):
        text = log.read_text(encoding="utf-8", errors="replace")  # tqdm bars; the locale may be ASCII
        assert f"Epoch {last_epoch}\n" in text and f"Epoch {last_epoch + 1}\n" not in text
    assert results["versions"]["nnunetv2"] and results["machine"]["cpu_count"]
    report = (out / "report.md").read_text()
    for group in results["summary"]["budgets"]:  # the schema the docs describe, on a real (tiny) run
        for method, entry in group["methods"].items():
            if method != STOCK and group["kind"] != "all":
                assert set(entry["paired"]) >= {"n_pairs", "mean_diff", "wins", "ci95", "wilcoxon_p"}
                assert entry["paired"]["n_pairs"] == 2 and entry["paired"]["ci95"][0] <= entry["paired"]["ci95"][1]
    for text in ("stock nnU-Net", "diffusion: linear probe", "95% CI", "hierarchical bootstrap", "no mirroring TTA", "the `_keepSides` trainers",
                 f"transfer timestep t*={DEFAULT_TRANSFER_TIMESTEP}", "Segmentation budget calibrated", "+ synthetic", "4 slices", "all (4 volumes)", "Wilcoxon",
                 "Wall time",
                 "pretraining", "Budgets: 4 slices x 1 repeat(s) (",
                 "Diffusion pretraining (`nnUNetTrainerDiffusionPretrain`): 1 x 3 iterations"):
        assert text in report
    for plot in ("label_efficiency.png", "contours.png", "pretraining_samples.png"):
        assert (out / plot).stat().st_size > 10_000
    # the pretraining saw only non-held-out images
    log = next((work / "nnUNet_results" / dataset.name).glob("nnUNetTrainerDiffusionPretrain__*/fold_*/training_log_*"))
    assert "Pretraining images: 4 labelled cases" in log.read_text()

    # re-running redoes no training run and keeps every result, and the user's notes
    state = json.loads((work / "benchmark_state.json").read_text())
    logs = {p: p.stat().st_mtime for p in (work / "logs").glob("nnUNetTrainer*.log")}
    (out / "notes.md").write_text("Run 3 shared the CPU with another job.\n")
    run(args, nnunet_env, timeout=900)
    assert (out / "notes.md").read_text() == "Run 3 shared the CPU with another job.\n"
    assert "Run 3 shared the CPU with another job." in (out / "report.md").read_text()
    rerun_state = json.loads((work / "benchmark_state.json").read_text())
    assert rerun_state["runs"] == state["runs"]
    assert rerun_state["phases"] == state["phases"]  # no phase redone either (pool, pretraining, splits)
    assert {p: p.stat().st_mtime for p in (work / "logs").glob("nnUNetTrainer*.log")} == logs

    # other training settings in the same work folder are refused
    changed = run([*args[:-4], "--finetune-epochs", "2", "-w", str(work), "-o", str(out)], nnunet_env, check=False)
    assert changed.returncode != 0 and "other settings (finetune_epochs 1 -> 2)" in changed.stderr
    other = run([*args, "--pretrainer", "nnUNetTrainerDiffusionPretrain_cosine"], nnunet_env, check=False)
    assert other.returncode != 0 and "(pretrainer nnUNetTrainerDiffusionPretrain -> " \
        "nnUNetTrainerDiffusionPretrain_cosine)" in other.stderr
    windowed = run([*args, "--window", "-125", "275"], nnunet_env, check=False)
    assert windowed.returncode != 0 and "(window None -> [-125.0, 275.0])" in windowed.stderr
    mirrored = run([*args, "--keep-sides", "no"], nnunet_env, check=False)
    assert mirrored.returncode != 0 and "(keep_sides True -> False)" in mirrored.stderr
    unknown = run([*args, "--pretrainer", "nnUNetTrainerBudget"], nnunet_env, check=False)
    assert unknown.returncode != 0 and "not a diffusion pretraining trainer; one of" in unknown.stderr

    # an external test set (another draw of the phantom), added to the finished benchmark: every
    # trained model predicts it, no run is trained again, and the report gains its section
    external = tmp_path / "external"
    write_phantom_dataset(external, num_labelled=2, seed=11, shape=(16, 48, 48))
    (external / "imagesTr").rename(external / "imagesTs")
    (external / "labelsTr").rename(external / "labelsTs")
    (external / "labelsTs" / "phantom_001.nii.gz").rename(external / "phantom_001_unlabelled.nii.gz")
    incomplete = run([*args, "--external-test", str(external)], nnunet_env, check=False)
    assert incomplete.returncode != 0 and "labelsTs/phantom_001.nii.gz" in incomplete.stderr.splitlines()[-1]
    (external / "phantom_001_unlabelled.nii.gz").rename(external / "labelsTs" / "phantom_001.nii.gz")
    run([*args, "--external-test", str(external)], nnunet_env, timeout=900)
    results = json.loads((out / "results.json").read_text())
    assert json.loads((work / "benchmark_state.json").read_text())["runs"] == state["runs"]
    ext = results["external_test"]
    assert ext["cases"] == ["phantom_000", "phantom_001"] and len(ext["runs"]) == len(results["runs"])
    for r in ext["runs"]:
        assert sorted(r["cases"]) == ext["cases"]
    finetune = next(g for g in ext["summary"]["budgets"] if g["kind"] == "slices")["methods"]
    assert finetune[METHODS[1]]["paired"]["n_pairs"] == 2
    assert "## External test set" in (out / "report.md").read_text()

