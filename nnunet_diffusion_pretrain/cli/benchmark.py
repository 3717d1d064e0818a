"""``nnUNetv2_diffusion_benchmark``: diffusion pretraining against stock nnU-Net on one dataset, on
identical low-label splits and budgets, evaluated on held-out cases with Dice and NSD.

    nnUNetv2_diffusion_benchmark --preset cpu --convert btcv6_subset -i ../shared/data/abdomen_ct_btcv6 \\
        --unlabeled ../shared/data/unlabeled_ct --window -125 275 --num-held-out 3 -o benchmarks/results/btcv6_cpu

Steps (each a stock nnU-Net command or one of ours, printed as it runs): conversion, fingerprint,
axial planning plus the preset's reduced configuration, preprocessing, low-label splits (one
held-out set for everything), with the cpu preset a calibration of the segmentation budget on a
validation volume of the training split (doubled until stock nnU-Net learns every organ there), the
unlabeled pool, one diffusion pretraining run on the images of every non-held-out case, then for
every budget and repeat stock nnU-Net and the three transfer trainers (or those of ``--methods``)
with the same budget, and stock nnU-Net on all training labels (the upper bound).
The report (report.md, results.json, plots) goes to the output folder and is rewritten after every
finished run; a partial one says which runs are still missing.

nnU-Net's folders live in the work folder (-w), never in your own nnUNet_raw/_preprocessed/_results.
Re-running the same command continues where it stopped: finished runs are not redone, an
interrupted run continues from its latest checkpoint, and nothing is deleted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

from nnunet_diffusion_pretrain.evaluation.axial_plans import AXIAL_PLANS, plan_axial
from nnunet_diffusion_pretrain.evaluation.budget_calibration import (add_calibration_fold, calibration_run,
                                                                    needs_another_run, run_name, run_seconds,
                                                                    unlearned_organs, validation_dice, worst_dice)
from nnunet_diffusion_pretrain.evaluation.external_test import external_cases
from nnunet_diffusion_pretrain.evaluation.presets import PRESETS, BenchmarkPreset
from nnunet_diffusion_pretrain.evaluation.reduced_configuration import add_configuration, reduced_2d_configuration
from nnunet_diffusion_pretrain.evaluation.report import EXTERNAL_METRICS, write_cv_report, write_report
from nnunet_diffusion_pretrain.evaluation.run_catalogue import (METHOD_NAMES, PRETRAINER, STOCK, SYNTHETIC,
                                                               TrainingRun, catalogue, start_arguments)
from nnunet_diffusion_pretrain.evaluation.segmentation_metrics import organ_metrics
from nnunet_diffusion_pretrain.evaluation.work_folder import nnunet_folders_env, pretraining_fold, training_budget_env
from nnunet_diffusion_pretrain.subprocess_steps import console_script, run_step
from nnunet_diffusion_pretrain.errors import UserFacingError, exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import (MANIFEST_NAME, cross_validation_held_out,
                                                                write_json_atomically)
from nnunet_diffusion_pretrain.evaluation.raw_dataset_check import check_raw_dataset
from nnunet_diffusion_pretrain.transfer.sided_labels import KEEP_SIDES_SUFFIX, sided_labels
from nnunet_diffusion_pretrain.pool.derived_dataset import DERIVED_MARKER

CONVERTERS = ("btcv6_subset", "chaos_mr", "flare22", "btcv", "amos22", "word", "abdomenct1k")
STATE_FILE = "benchmark_state.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--convert", choices=CONVERTERS, help="convert a download with nnUNetv2_convert_NAME -i DIR")
    source.add_argument("--raw-dataset", type=Path, help="an existing nnU-Net raw dataset folder (DatasetXXX_Name)")
    parser.add_argument("-i", type=Path, help="the download to convert (with --convert)")
    parser.add_argument("-d", type=int, default=None,
                        help="dataset ID in the work folder (with --convert); default: the converter's")
    parser.add_argument("--unlabeled", type=Path, nargs="*", default=[],
                        help="folders of unlabeled scans for the pretraining pool (besides the training cases' images)")
    parser.add_argument("--window", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="convert the --unlabeled scans from Hounsfield units with this window before they join "
                             "the pool (see nnUNetv2_diffusion_add_unlabeled --window)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="default cpu")
    parser.add_argument("--num-held-out", type=int, default=None, help="held-out cases; default 20%% of the cases")
    parser.add_argument("--folds", type=int, default=None,
                        help="cross-validate: K disjoint held-out groups, each with its own pretraining (on the other "
                             "volumes: K pretraining runs, K seeds) and every other volume in turn as the labelled "
                             "choice; per group a work and report folder fold_k, and a combined report with the "
                             "paired statistics over all groups (every volume tested once). Replaces --num-held-out; "
                             "with --repeats R, R labelled choices per group (distinct volumes) instead of all")
    parser.add_argument("--num-labeled", type=int, nargs="*", default=None, help="volume budgets (preset's default)")
    parser.add_argument("--num-labeled-slices", type=int, nargs="*", default=None,
                        help="slice budgets (preset's default)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per budget (preset's default)")
    parser.add_argument("--synthetic-images", type=int, default=None,
                        help="generated images for the synthetic-data row (preset's default; 0: no such row)")
    parser.add_argument("--methods", nargs="+", choices=list(METHOD_NAMES), default=list(METHOD_NAMES),
                        help="the arms to train (default all; stock is always one: every arm is paired with it); "
                             "a later run may add arms to the same work folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out set and the labelled cases")
    parser.add_argument("--pretrainer", default=PRETRAINER,
                        help=f"diffusion pretraining trainer (a variant, e.g. {PRETRAINER}_unitRange); "
                             f"default {PRETRAINER}")
    parser.add_argument("--keep-sides", choices=("auto", "yes", "no"), default="auto",
                        help="train every arm without mirroring, rotating at most 15 degrees, and predict without "
                             "mirroring (the _keepSides trainers); auto: when dataset.json has labels with a side "
                             "(left/right); default auto")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="override the preset (e.g. a smoke test)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="override the preset")
    parser.add_argument("--max-budget-doublings", type=int, default=None,
                        help="double the segmentation budget up to this many times until stock nnU-Net, trained on "
                             "all training volumes but one, learns every organ of that one (held-out cases unused); "
                             "preset's default (cpu 2, gpu 0); 0: the budget as given")
    parser.add_argument("--calibration-runs", type=int, default=None,
                        help="runs of a budget that must each learn every organ before it is chosen (the worse "
                             "counts; a miss ends the step at once); preset's default (cpu 2, gpu 1)")
    parser.add_argument("--iterations-per-epoch", type=int, default=None,
                        help="override the preset's iterations per epoch (pretraining and segmentation)")
    parser.add_argument("--external-test", type=Path, default=None,
                        help="a folder with imagesTs/ and labelsTs/ from another source, in the dataset's "
                             "representation: every trained model also predicts it, and the report adds a section "
                             "with the same statistics (may be added to a finished benchmark)")
    parser.add_argument("--nsd-tolerance", type=float, default=2.0,
                        help="NSD tolerance in mm; default 2.0 (FLARE22 used 1 mm at finer spacing)")
    parser.add_argument("-w", "--work", type=Path, default=None,
                        help="work folder for nnU-Net's folders, logs and checkpoints; default benchmarks/work/NAME")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="report folder; default benchmarks/results/NAME (NAME = dataset name + preset)")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("-np", type=int, default=2, help="processes for conversion and preprocessing; default 2")
    return parser


def _check_pretrainer(name: str) -> None:
    """Refused before any step runs, rather than by nnUNetv2_train after conversion and planning."""
    from nnunet_diffusion_pretrain.training import diffusion_pretrain_trainer as module

    known = sorted(k for k, v in vars(module).items()
                   if isinstance(v, type) and issubclass(v, module.nnUNetTrainerDiffusionPretrain))
    if name not in known:
        raise UserFacingError(f"--pretrainer {name} is not a diffusion pretraining trainer; one of {', '.join(known)}")


def _check_methods(args: argparse.Namespace, preset: BenchmarkPreset) -> None:
    """Puts ``--methods`` in the catalogue's order (the same arms, the same command) and refuses a
    set without stock, or a synthetic row without its fine-tune-all labeller."""
    args.methods = [m for m in METHOD_NAMES if m in args.methods]
    if "stock" not in args.methods:
        raise UserFacingError("--methods must include stock: every other arm is paired with it")
    if preset.synthetic_images and "finetune" not in args.methods:
        raise UserFacingError("the synthetic row is labelled by fine-tune all: add finetune to --methods or pass "
                              "--synthetic-images 0")


def _effective_preset(args: argparse.Namespace) -> BenchmarkPreset:
    preset = PRESETS[args.preset]
    changes = {"num_labeled": args.num_labeled, "num_labeled_slices": args.num_labeled_slices,
               "repeats": args.repeats, "synthetic_images": args.synthetic_images,
               "pretrain_epochs": args.pretrain_epochs,
               "finetune_epochs": args.finetune_epochs, "pretrain_iterations": args.iterations_per_epoch,
               "finetune_iterations": args.iterations_per_epoch, "budget_doublings": args.max_budget_doublings,
               "calibration_runs": args.calibration_runs}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in changes.items() if v is not None}
    return BenchmarkPreset(**{**preset.as_dict(), "reduced": preset.reduced, **values})


class Benchmark:
    """The pipeline's state: folders, environment, timings (kept in the work folder's state file)."""

    def __init__(self, args: argparse.Namespace, preset: BenchmarkPreset, dataset_name: str, work: Path, out: Path,
                 cv: tuple[int, int] | None = None):
        self.args, self.preset, self.dataset, self.work, self.out, self.cv = args, preset, dataset_name, work, out, cv
        self.dataset_id = int(dataset_name[7:10])
        self.slice_dataset_id = self.dataset_id + 100 if self.dataset_id < 900 else self.dataset_id - 100
        self.synthetic_first_id = self.dataset_id + 200 if self.dataset_id < 790 else self.dataset_id - 300
        # export workers only contend with inference on few cores; a larger machine may set more
        self.env = nnunet_folders_env(work, nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", "1"))
        self.state_file = work / STATE_FILE
        self.state = json.loads(self.state_file.read_text()) if self.state_file.is_file() else {"phases": {}, "runs": {}}
        raw_json = json.loads((Path(self.env["nnUNet_raw"]) / dataset_name / "dataset.json").read_text())
        sided = sided_labels(raw_json)
        self.keep_sides = bool(sided) if args.keep_sides == "auto" else args.keep_sides == "yes"
        self.trainer_suffix = KEEP_SIDES_SUFFIX if self.keep_sides else ""
        settings = {"preset": preset.as_dict(), "seed": args.seed, "num_held_out": args.num_held_out,
                    "unlabeled": sorted(str(p.resolve()) for p in args.unlabeled), "pretrainer": args.pretrainer,
                    "window": args.window, "keep_sides": self.keep_sides, "sided_labels": sided,
                    "cv_fold": list(cv) if cv else None}
        fixed = ("pretrain_epochs", "pretrain_iterations", "finetune_epochs", "finetune_iterations", "configuration",
                 "budget_doublings", "calibration_runs")
        old = self.state.get("settings")
        if old:
            # work folders older than 0.3.0 never calibrated, older than 0.4.0 with one run per budget
            before = {"budget_doublings": 0, "calibration_runs": 1, **old["preset"]}
            if before["budget_doublings"] == settings["preset"]["budget_doublings"] == 0:
                before["calibration_runs"] = settings["preset"]["calibration_runs"]  # no calibration: irrelevant
            changed = [f"{k} {before[k]} -> {settings['preset'][k]}" for k in fixed
                       if before[k] != settings["preset"][k]]
            # work folders older than 0.7.0 had no other pretrainer, older than 0.8.0 no window, older than
            # 0.9.0 kept nnU-Net's mirroring
            earlier = {"pretrainer": PRETRAINER, "window": None, "keep_sides": False, "cv_fold": None, **old}
            changed += [f"{k} {earlier[k]} -> {settings[k]}"
                        for k in ("seed", "num_held_out", "pretrainer", "window", "keep_sides", "cv_fold")
                        if earlier[k] != settings[k]]
            if changed:
                raise UserFacingError(f"{work} holds a benchmark with other settings ({'; '.join(changed)}); use "
                                      f"another -w folder or the same settings (budgets and repeats may be "
                                      f"extended)")
        self.state["settings"] = settings

    def save_state(self) -> None:
        write_json_atomically(self.state_file, self.state)

    @contextmanager
    def timed(self, table: str, key: str) -> Iterator[None]:
        """Adds the block's wall time to ``state[table][key]`` even when it fails or is stopped:
        a resumed step continues the stopped attempt's work, so that time was spent on it."""
        start = time.time()
        try:
            yield
        finally:
            self.state[table][key] = self.state[table].get(key, 0.0) + time.time() - start
            self.save_state()

    def phase(self, name: str, title: str, command: list[str], env: dict | None = None) -> None:
        with self.timed("phases", name):
            run_step(title, command, env or self.env, self.work / "logs" / f"{name}.log")

    def folder(self, key: str) -> Path:
        return Path(self.env[key])

    def training_env(self, epochs: int, iterations: int) -> dict:
        return training_budget_env(self.env, epochs, iterations, self.preset.val_iterations)


def _source_datasets(raw: Path, pattern: str) -> list[str]:
    """Datasets in ``raw`` matching ``pattern``, without the slice datasets derived from them."""
    return sorted(p.parent.name for p in raw.glob(f"{pattern}/dataset.json") if not (p.parent / DERIVED_MARKER).exists())


def _prepare_dataset(args: argparse.Namespace, work: Path) -> str:
    raw = work / "nnUNet_raw"
    if args.raw_dataset:
        source = args.raw_dataset.resolve()
        if not (source / "dataset.json").is_file() or not source.name.startswith("Dataset"):
            raise UserFacingError(f"{source} is not an nnU-Net raw dataset folder (DatasetXXX_Name with dataset.json)")
        link = raw / source.name
        if not link.exists():
            check_raw_dataset(source)  # before anything is written
            raw.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source, target_is_directory=True)
        return source.name
    raw.mkdir(parents=True, exist_ok=True)
    if args.i is None:
        raise UserFacingError("--convert needs -i (the download's folder)")
    pattern = "Dataset*" if args.d is None else f"Dataset{args.d:03d}_*"
    existing = _source_datasets(raw, pattern)
    if len(existing) > 1:
        raise UserFacingError(f"{raw} holds several datasets ({', '.join(existing)}); pick one with -d")
    if existing:
        return existing[0]
    env = dict(os.environ, nnUNet_raw=str(raw))
    run_step(f"convert {args.i} ({args.convert})", [console_script(f"nnUNetv2_convert_{args.convert}"), "-i",
                                                    str(args.i), "-np", str(args.np),
                                                    *([] if args.d is None else ["-d", str(args.d)])], env)
    return _source_datasets(raw, pattern)[0]


def _plan(bench: Benchmark) -> None:
    preprocessed = bench.folder("nnUNet_preprocessed") / bench.dataset
    if not (preprocessed / "dataset_fingerprint.json").is_file():
        bench.phase("fingerprint", "fingerprint and dataset integrity check (stock nnU-Net)", [
            console_script("nnUNetv2_extract_fingerprint"), "-d", str(bench.dataset_id), "-np", str(bench.args.np),
            "--verify_dataset_integrity"])
    plans_file = preprocessed / f"{AXIAL_PLANS}.json"
    if not plans_file.is_file():
        print(f"\n=== plan with nnU-Net's ExperimentPlanner, axial 2D slices (suppress_transpose) -> {plans_file}")
        os.environ.update({k: bench.env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
        plan_axial(bench.dataset_id)
    reduced = bench.preset.reduced
    if reduced is not None:
        plans = json.loads(plans_file.read_text())
        entry = reduced_2d_configuration(plans, AXIAL_PLANS, reduced.name, reduced.patch_edge, reduced.batch_size,
                                         reduced.n_stages, reduced.base_features, reduced.max_features)
        add_configuration(plans_file, reduced.name, entry)
    # state files older than 0.10.1 timed a phase only once it had finished
    if not bench.state.setdefault("preprocessed", "preprocess" in bench.state["phases"]):
        bench.phase("preprocess", f"preprocess configuration {bench.preset.configuration} (stock nnU-Net)", [
            console_script("nnUNetv2_preprocess"), "-d", str(bench.dataset_id), "-plans_name", AXIAL_PLANS,
            "-c", bench.preset.configuration, "-np", str(bench.args.np)])
        bench.state["preprocessed"] = True
        bench.save_state()


def _splits(bench: Benchmark) -> list[Path]:
    preset = bench.preset
    command = [console_script("nnUNetv2_make_lowlabel_splits"), "-d", str(bench.dataset_id), "-p", AXIAL_PLANS,
               "-c", preset.configuration, "--all-labeled", "--repeats", str(preset.repeats), "--seed",
               str(bench.args.seed), "-np", str(bench.args.np)]
    if bench.cv:
        command += ["--cv-fold", *map(str, bench.cv)]
    elif bench.args.num_held_out is not None:
        command += ["--num-val", str(bench.args.num_held_out)]
    if preset.num_labeled:
        command += ["--num-labeled", *map(str, preset.num_labeled)]
    if preset.num_labeled_slices:
        command += ["--num-labeled-slices", *map(str, preset.num_labeled_slices), "--slice-dataset-id",
                    str(bench.slice_dataset_id)]
    if bench.state.get("splits_command") != command[1:]:  # unchanged budgets: folds and slice dataset exist
        bench.phase("splits", "low-label splits: one held-out set, budgets x repeats, upper-bound fold", command)
        bench.state["splits_command"] = command[1:]
        bench.save_state()
    folders = [bench.folder("nnUNet_preprocessed") / bench.dataset]
    if preset.num_labeled_slices:
        folders += sorted(bench.folder("nnUNet_preprocessed").glob(f"Dataset{bench.slice_dataset_id:03d}_*"))
    return folders


def _calibrate_budget(bench: Benchmark, all_fold: dict, labels: dict) -> int:
    """Segmentation epochs for every run: the preset's, doubled while stock nnU-Net trained on all
    training volumes but one does not learn every organ of that one in each of ``calibration_runs``
    runs (at most ``budget_doublings`` times). Recorded in the state file, so a resumed benchmark
    neither redoes nor changes it."""
    preset = bench.preset
    if "chosen_epochs" in bench.state.get("budget_calibration", {}):
        return bench.state["budget_calibration"]["chosen_epochs"]
    if preset.budget_doublings == 0:
        return preset.finetune_epochs
    record = bench.state.setdefault("budget_calibration", {"steps": []})
    preprocessed = bench.folder("nnUNet_preprocessed") / bench.dataset
    record["fold"], record["train"], record["val"] = add_calibration_fold(preprocessed, all_fold["train"])
    while True:
        epochs = preset.finetune_epochs * 2 ** len(record["steps"])
        iterations = epochs * preset.finetune_iterations
        runs, seconds = [], 0.0
        while not runs or needs_another_run(runs, preset.calibration_runs):
            repeat = len(runs) + 1
            kept = calibration_run(bench.folder("nnUNet_results") / bench.dataset, STOCK + bench.trainer_suffix,
                                   AXIAL_PLANS,
                                   preset.configuration, record["fold"], iterations,
                                   bench.training_env(epochs, preset.finetune_iterations),
                                   bench.work / "logs" / f"budget_{run_name(iterations, repeat)}.log",
                                   bench.args.device, repeat=repeat)
            runs.append(validation_dice(kept, labels))
            seconds += run_seconds(kept)
        dice = worst_dice(runs)
        record["steps"].append({"epochs": epochs, "iterations": iterations, "seconds": seconds, "runs": runs,
                                "dice": dice, "unlearned": unlearned_organs(dice)})
        bench.state["phases"]["budget calibration"] = sum(s["seconds"] for s in record["steps"])
        done = not record["steps"][-1]["unlearned"] or len(record["steps"]) > preset.budget_doublings
        if done:
            record["chosen_epochs"] = epochs
        bench.save_state()
        print(f"  {iterations} iterations, {len(runs)} run(s), the worse per organ: Dice on {record['val'][0]} "
              + ", ".join(f"{k} {v:.3f}" for k, v in dice.items())
              + (f" -> every run gets {iterations} iterations" if done else ""))
        if done:
            return epochs


def _pretrain(bench: Benchmark, all_fold: int) -> Path:
    preset = bench.preset
    fold = pretraining_fold(bench.work, bench.dataset, preset.configuration, all_fold, bench.args.pretrainer)
    checkpoint = fold / "checkpoint_final.pth"
    if not (fold / "samples" / "samples.png").is_file():  # the pool only feeds an unfinished pretraining
        for folder in bench.args.unlabeled:
            bench.phase("pool", f"add {folder} to the unlabeled pool", [
                console_script("nnUNetv2_diffusion_add_unlabeled"), "-d", str(bench.dataset_id), "-c",
                preset.configuration, "-p", AXIAL_PLANS, "-i", str(folder), "-np", str(bench.args.np),
                *(["--window", *(f"{v:g}" for v in bench.args.window)] if bench.args.window else [])])
        resume = ["--c"] if any((fold / f"checkpoint_{k}.pth").is_file() for k in ("final", "latest")) else []
        bench.phase("pretraining", f"diffusion pretraining, {preset.pretrain_epochs} x {preset.pretrain_iterations} "
                    f"iterations, on the images of fold {all_fold} (held-out cases unseen) + the unlabeled pool", [
            console_script("nnUNetv2_train"), str(bench.dataset_id), preset.configuration, str(all_fold), "-tr",
            bench.args.pretrainer, "-p", AXIAL_PLANS, "-device", bench.args.device, *resume],
            bench.training_env(preset.pretrain_epochs, preset.pretrain_iterations))
    return checkpoint


def _synthetic_dataset(bench: Benchmark, run: TrainingRun, checkpoint: Path, progress: str) -> None:
    """The derived dataset of a synthetic-data run: generated images labelled by the same budget
    and repeat's fine-tuned model."""
    if (bench.folder("nnUNet_preprocessed") / run.dataset / "splits_final.json").is_file():
        return
    preset = bench.preset
    run_step(f"[{progress}] {run.run_id}: {preset.synthetic_images} generated images labelled by "
             f"{run.labeler_dataset} fold {run.labeler_fold} -> {run.dataset}", [
        console_script("nnUNetv2_diffusion_synthetic_dataset"), "-d", run.labeler_dataset[7:10], "-c",
        preset.configuration, "-p", AXIAL_PLANS, "-f", str(run.labeler_fold), "-tr", run.trainer, "-chk",
        str(checkpoint), "-n", str(preset.synthetic_images), "--threshold", str(preset.synthetic_threshold),
        "--target-id", run.dataset[7:10], "-np", str(bench.args.np), "-device", bench.args.device],
        bench.env, bench.work / "logs" / f"{run.run_id}.log")


def _metrics_file(bench: Benchmark, run: TrainingRun) -> Path:
    return bench.work / "metrics" / f"{run.run_id}.json"


def _train_and_evaluate(bench: Benchmark, run: TrainingRun, checkpoint: Path, labels: dict, held_out: list[str],
                        progress: str) -> bool:
    """Trains (or finishes) one run and scores its held-out predictions; False if both were done before."""
    preset = bench.preset
    fold = run.fold_folder(bench.folder("nnUNet_results"), AXIAL_PLANS, preset.configuration)
    if not (fold / "validation" / "summary.json").is_file():
        with bench.timed("runs", run.run_id):
            if run.method == SYNTHETIC:
                _synthetic_dataset(bench, run, checkpoint, progress)
            start = start_arguments(fold, checkpoint if run.needs_pretrained_weights else None)
            run_step(f"[{progress}] {run.run_id}: train on {', '.join(run.train)}, validate on the held-out cases", [
                console_script("nnUNetv2_train"), run.dataset[7:10], preset.configuration, str(run.fold), "-tr",
                run.trainer, "-p", AXIAL_PLANS, "-device", bench.args.device, *start],
                bench.training_env(preset.finetune_epochs, preset.finetune_iterations),
                bench.work / "logs" / f"{run.run_id}.log")
    metrics_file = _metrics_file(bench, run)
    if metrics_file.is_file():
        return False
    raw = bench.folder("nnUNet_raw") / bench.dataset
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    per_case = {case: organ_metrics(str(fold / "validation" / f"{case}{ending}"),
                                    str(raw / "labelsTr" / f"{case}{ending}"), labels, bench.args.nsd_tolerance)
                for case in held_out}
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(metrics_file, {"run": run.run_id, "cases": per_case})
    return True


def _score_external(bench: Benchmark, run: TrainingRun, cases: list[str], labels: dict, progress: str) -> bool:
    """The finished run's model predicts the external test set (nnU-Net's predict, its inference
    settings) and is scored like on the held-out cases; False if done before."""
    metrics_file = bench.work / EXTERNAL_METRICS / f"{run.run_id}.json"
    if metrics_file.is_file():
        return False
    preset, folder = bench.preset, bench.args.external_test.resolve()
    predictions = bench.work / "external_predictions" / run.run_id
    with bench.timed("phases", "external test"):
        run_step(f"[{progress}] {run.run_id}: predict the external test set", [
            console_script("nnUNetv2_predict"), "-i", str(folder / "imagesTs"), "-o", str(predictions), "-d",
            run.dataset[7:10], "-c", preset.configuration, "-p", AXIAL_PLANS, "-tr", run.trainer, "-f",
            str(run.fold), "-chk", "checkpoint_final.pth", "-device", bench.args.device, "-npp", "1", "-nps", "1"],
            bench.env, bench.work / "logs" / f"{run.run_id}_external.log")
    ending = json.loads((bench.folder("nnUNet_raw") / bench.dataset / "dataset.json").read_text())["file_ending"]
    per_case = {case: organ_metrics(str(predictions / f"{case}{ending}"), str(folder / "labelsTs" / f"{case}{ending}"),
                                    labels, bench.args.nsd_tolerance) for case in cases}
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(metrics_file, {"run": run.run_id, "cases": per_case})
    bench.save_state()
    return True


def _finished_elsewhere(out: Path, args: argparse.Namespace) -> bool:
    """A fold whose report holds every run of the same command under the same package version:
    a work folder rarely outlives the machine it ran on, so a study of many folds continues from
    the committed reports rather than training finished folds again."""
    results = out / "results.json"
    if not results.is_file():
        return False
    result = json.loads(results.read_text())
    recorded = {"methods": str(list(METHOD_NAMES)), **result["meta"]["args"]}  # reports before --methods: all
    same_args = {k: v for k, v in recorded.items() if k != "np"} == \
        {k: str(v) for k, v in vars(args).items() if k != "np"}
    return not result["pending_runs"] and same_args and \
        result["versions"]["nnunet-diffusion-pretrain"] == version("nnunet-diffusion-pretrain")


def _training_cases(bench: Benchmark) -> int:
    """Volumes outside fold k's held-out group: the labelled choices (all of them unless --repeats)."""
    raw = bench.folder("nnUNet_raw") / bench.dataset
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    cases = sorted(p.name[:-len(ending)] for p in (raw / "labelsTr").glob(f"*{ending}"))
    return len(cases) - len(cross_validation_held_out(cases, *bench.cv, bench.args.seed))


def _benchmark(args: argparse.Namespace, preset: BenchmarkPreset, work: Path, out: Path | None,
               cv: tuple[int, int] | None = None) -> Path:
    """One held-out set (with ``cv``: group k of K) from conversion to report; returns the report folder."""
    dataset = _prepare_dataset(args, work)
    default = Path("benchmarks/results") / (f"{dataset}_{preset.name}" + (f"_cv{cv[0]}/fold_{cv[1]}" if cv else ""))
    out = (out or default).resolve()
    if cv and _finished_elsewhere(out, args):
        print(f"fold {cv[1]}: {out / 'results.json'} is complete for the same command and package version; not run "
              f"again (its work folder is not needed; delete that results.json to redo the fold)", flush=True)
        return out
    bench = Benchmark(args, preset, dataset, work, out, cv)
    if cv:
        others = _training_cases(bench)
        if (args.repeats or 0) > others:
            raise UserFacingError(f"--repeats {args.repeats}: fold {cv[1]} has only {others} volumes outside its "
                                  f"held-out group to choose the labelled volume from; use at most {others}")
        bench.preset = preset = dataclasses.replace(preset, repeats=args.repeats or others)
    bench.save_state()
    print(f"benchmark of {dataset}, preset {preset.name}; work folder {work}; report folder {out}")
    print("inspect it with nnU-Net's commands after: " + " ".join(
        f"export {k}={shlex.quote(bench.env[k])};" for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")))

    _plan(bench)
    manifest_folders = _splits(bench)
    manifest = json.loads((manifest_folders[0] / MANIFEST_NAME).read_text())
    all_fold = next(f for f in manifest["folds"] if f["kind"] == "all")
    dataset_json = json.loads((bench.folder("nnUNet_raw") / dataset / "dataset.json").read_text())
    labels = dataset_json["labels"]
    external = None
    if args.external_test:
        external = {"folder": str(args.external_test.resolve()),
                    "cases": external_cases(args.external_test, dataset_json["file_ending"],
                                            len(dataset_json["channel_names"]))}
    bench.preset = dataclasses.replace(preset, finetune_epochs=_calibrate_budget(bench, all_fold, labels))
    checkpoint = _pretrain(bench, all_fold["fold"])

    runs = catalogue(manifest_folders, bench.synthetic_first_id if preset.synthetic_images else None,
                     bench.trainer_suffix, tuple(METHOD_NAMES[m] for m in args.methods))
    meta = {"dataset": dataset, "args": {k: str(v) for k, v in vars(args).items()}, "plans": AXIAL_PLANS}

    def report_so_far() -> Path:
        finished = [r for r in runs if _metrics_file(bench, r).is_file()]
        return write_report(bench.out, finished, bench.work, bench.state, labels, manifest["held_out"],
                            checkpoint.parent, meta, pending=[r for r in runs if r not in finished], external=external)

    started = time.time()
    for i, run in enumerate(tqdm(runs, desc="training runs", unit="run", disable=None)):
        # a partial report after every new run: a benchmark stopped early (a lent GPU's time running
        # out, a killed job) still leaves a report of what finished
        progress = f"run {i + 1}/{len(runs)}"
        new = _train_and_evaluate(bench, run, checkpoint, labels, manifest["held_out"], progress)
        if external:
            new = _score_external(bench, run, external["cases"], labels, progress) or new
        if new and i + 1 < len(runs):
            print(f"partial report ({i + 1} of {len(runs)} runs): {report_so_far()}")
    print(f"\n{len(runs)} runs finished ({time.time() - started:.0f} s in this invocation)")
    print(f"report: {report_so_far()}")
    return out


@exits_cleanly_on_user_errors
def main() -> int:
    args = _parser().parse_args()
    _check_pretrainer(args.pretrainer)
    preset = _effective_preset(args)
    _check_methods(args, preset)
    name_hint = args.raw_dataset.name if args.raw_dataset else f"{args.convert}"
    work = (args.work or Path("benchmarks/work") / (f"{name_hint}_{preset.name}" +
                                                    (f"_cv{args.folds}" if args.folds else ""))).resolve()
    if not args.folds:
        _benchmark(args, preset, work, args.output)
        return 0
    if args.num_held_out is not None:
        raise UserFacingError("--folds chooses the held-out cases (group k of K); drop --num-held-out")
    if args.folds < 2:
        raise UserFacingError(f"--folds needs at least 2 groups, got {args.folds}")
    folds = []
    for k in range(args.folds):
        print(f"\n##### cross-validation fold {k} of {args.folds} (held-out group {k})", flush=True)
        folds.append(_benchmark(args, preset, work / f"fold_{k}", args.output / f"fold_{k}" if args.output else None,
                                (args.folds, k)))
    print(f"cross-validated report: {write_cv_report(folds[0].parent, folds)}")
    return 0
