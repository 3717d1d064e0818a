"""The benchmark's report: ``results.json`` (every raw number, settings, versions, machine, date),
``report.md`` (tables, paired tests, wall times) and two plots (label-efficiency curve, contours).

Statistics: a run's score is the mean over held-out cases of the mean over organs; "mean +- std" is
over repeats (different labelled cases). Paired differences against stock nnU-Net pair each
held-out case of each repeat (same labelled cases, same case): mean difference, wins, a 95%
interval from a hierarchical bootstrap over labelled choices and held-out cases, and the Wilcoxon
signed-rank test (``paired_statistics``); with the share of the score variance that comes from the
labelled choice, the held-out case and the pretraining run.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from nnunet_diffusion_pretrain.evaluation.budget_calibration import ORGAN_LEARNED_DICE, unlearned_organs  # noqa: E402
from nnunet_diffusion_pretrain.evaluation.run_catalogue import (  # noqa: E402
    FINETUNE, METHOD_LABELS, METHODS, PRETRAINER, STOCK, SYNTHETIC, TrainingRun, budget_order)
from nnunet_diffusion_pretrain.evaluation.paired_statistics import (paired_comparison,  # noqa: E402
                                                                   variance_components, verdict)
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import write_json_atomically  # noqa: E402
from nnunet_diffusion_pretrain.transfer.sided_labels import METHOD_SETTINGS_FILE  # noqa: E402

METRICS = ("dice", "nsd")
NOTES_FILE = "notes.md"  # hand-written remarks in the report folder, appended to report.md
EXTERNAL_METRICS = "metrics_external"  # the work folder's per-run scores on the external test set
COLORS = dict(zip(METHODS, ("tab:gray", "tab:blue", "tab:green", "tab:red", "tab:purple")))


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for package in ("torch", "nnunetv2", "dynamic_network_architectures", "diffusers", "monai", "SimpleITK",
                    "numpy", "scipy", "nnunet-diffusion-pretrain"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _machine() -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30 if hasattr(os, "sysconf") else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "memory_gib": round(memory, 1) if memory else None,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _run_scores(cases: dict) -> dict[str, dict[str, float]]:
    """Per case: mean over organs of each metric."""
    return {case: {m: float(np.mean([organ[m] for organ in organs.values()])) for m in METRICS}
            for case, organs in cases.items()}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _pair_scores(runs: list[TrainingRun], scores: list[dict]) -> dict[tuple[str, str, str], float]:
    """Dice keyed by (fold: the pretraining run and held-out group, labelled choice, held-out case)."""
    return {(str(r.cv_fold or 0), f"r{r.repeat}", case): s[case]["dice"] for r, s in zip(runs, scores) for case in s}


def summarize(runs: list[TrainingRun], metrics: dict[str, dict]) -> dict:
    """Aggregates per (budget, method): scores over repeats, per-organ means, paired tests vs stock."""
    groups: dict[tuple, list[TrainingRun]] = {}
    for run in runs:
        groups.setdefault((run.kind, run.budget, run.budget_label), []).append(run)
    summary = []
    for (kind, budget, label), members in sorted(groups.items(), key=lambda kv: budget_order(*kv[0][:2])):
        by_method, pair_scores = {}, {}
        for method in METHODS:
            mruns = sorted((r for r in members if r.method == method), key=lambda r: r.repeat)
            if not mruns:
                continue
            scores = [_run_scores(metrics[r.run_id]["cases"]) for r in mruns]
            entry = {"repeats": len(mruns)}
            for m in METRICS:
                per_repeat = [float(np.mean([s[m] for s in sc.values()])) for sc in scores]
                entry[m] = dict(zip(("mean", "std"), _mean_std(per_repeat)), per_repeat=per_repeat)
            organs = next(iter(metrics[mruns[0].run_id]["cases"].values())).keys()
            entry["organs"] = {o: {m: float(np.mean([c[o][m] for r in mruns for c in metrics[r.run_id]["cases"].values()]))
                                   for m in METRICS} for o in organs}
            entry["case_scores"] = [[sc[c]["dice"] for c in sorted(sc)] for sc in scores]
            pair_scores[method] = _pair_scores(mruns, scores)
            entry["variance"] = variance_components(pair_scores[method])
            by_method[method] = entry
        if STOCK in by_method:
            for method, entry in by_method.items():
                if method != STOCK:
                    entry["paired"] = paired_comparison(pair_scores[method], pair_scores[STOCK])
        if SYNTHETIC in by_method and FINETUNE in by_method:  # what the generated images add to the same method
            by_method[SYNTHETIC]["vs_finetune_dice"] = paired_comparison(pair_scores[SYNTHETIC], pair_scores[FINETUNE])
        summary.append({"kind": kind, "budget": budget, "label": label, "methods": by_method})
    return {"budgets": summary}


def _paired_text(test: dict) -> str:
    low, high = test["ci95"]
    return (f"{test['mean_diff']:+.3f} Dice (95% CI [{low:+.3f}, {high:+.3f}], {test['wins']}/{test['n_pairs']} "
            f"pairs won, Wilcoxon p = {test['wilcoxon_p']:.3g})")


def _verdicts(summary: dict) -> list[str]:
    """The target, checked at every low-label budget: each diffusion method against stock nnU-Net,
    paired over (labelled choice, held-out case); "beats stock" only when the interval excludes 0."""
    lines = []
    for group in summary["budgets"]:
        methods = group["methods"]
        if group["kind"] == "all" or STOCK not in methods:
            continue
        for method, entry in methods.items():
            if method in (STOCK, SYNTHETIC) or not entry.get("paired"):
                continue
            lines.append(f"- **{group['label']}, {METHOD_LABELS[method]}** against stock nnU-Net: "
                         f"{_paired_text(entry['paired'])} -> {verdict(entry['paired'])}")
    return lines


def _synthetic_verdicts(summary: dict) -> list[str]:
    """Whether the synthetic images help: fine-tune all with them against fine-tune all without,
    paired the same way."""
    lines = []
    for group in summary["budgets"]:
        test = group["methods"].get(SYNTHETIC, {}).get("vs_finetune_dice")
        if test:
            said = {"beats stock": "helps", "worse than stock": "hurts"}.get(verdict(test), "no difference shown")
            lines.append(f"- **Synthetic images, {group['label']}**: {METHOD_LABELS[SYNTHETIC]} against "
                         f"{METHOD_LABELS[FINETUNE]}: {_paired_text(test)} -> {said}")
    return lines


def _mean_table(summary: dict) -> list[str]:
    lines = ["| labelled data | method | repeats | Dice | NSD | paired Dice diff vs stock | 95% CI | wins/pairs | "
             "Wilcoxon p |", "|---|---|---|---|---|---|---|---|---|"]
    for group in summary["budgets"]:
        for method, e in group["methods"].items():
            t = e.get("paired", {})
            lines.append(f"| {group['label']} | {METHOD_LABELS[method]} | {e['repeats']} | {_fmt(e['dice'])} | "
                         f"{_fmt(e['nsd'])} | " + (f"{t['mean_diff']:+.3f} | [{t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}] "
                                                   f"| {t['wins']}/{t['n_pairs']} | {t['wilcoxon_p']:.3g} |"
                                                   if t else "| | | |"))
    return lines


def _external_section(external: dict) -> list[str]:
    """The same statistics on the external test set: how the models carry to another source."""
    return ["", f"## External test set: `{external['folder']}`", "",
            f"Every trained model also predicted the {len(external['cases'])} cases of this folder (another "
            f"source, never used for training or any choice), with the same inference settings as the held-out "
            f"cases.", "", *(_verdicts(external["summary"]) or ["- (no low-label budget with stock and diffusion runs)"]),
            "", *_mean_table(external["summary"])]


def _variance_lines(summary: dict) -> list[str]:
    """Each method's Dice, then each paired difference from stock: in a difference the fold's
    effect on both methods cancels, so its fold share is the pretraining run's effect on the gain."""
    lines = []
    for group in summary["budgets"]:
        for method, entry in group["methods"].items():
            if entry["repeats"] < 2:
                continue
            rows = [(METHOD_LABELS[method], entry.get("variance", {}))]
            if "variance" in entry.get("paired", {}):
                rows.append((f"{METHOD_LABELS[method]} - stock (paired difference)", entry["paired"]["variance"]))
            for name, variance in rows:
                shares = variance.get("shares_of_sum_of_squares")
                if shares:
                    fold = "n/a (one run)" if shares["pretraining_run"] is None else f"{shares['pretraining_run']:.0%}"
                    lines.append(f"| {group['label']} | {name} | {shares['labelled_choice']:.0%} | "
                                 f"{shares['held_out_case']:.0%} | {fold} | {shares['residual']:.0%} |")
    return (["", "## Where the spread comes from (shares of the Dice sum of squares)", "",
             "A fold is one pretraining run and one held-out group; for a method's Dice its share mixes "
             "the two (stock nnU-Net has a fold share without any pretraining); in a paired difference what "
             "the held-out group does to both methods alike cancels.", "",
             "| labelled data | scores | labelled choice | held-out case | fold (pretraining run) | interaction |",
             "|---|---|---|---|---|---|", *lines] if lines else [])


def _upper_bound_check(summary: dict) -> list[str]:
    """The preset must let stock nnU-Net learn every organ with all labels; say so when it did not."""
    lines = []
    for group in summary["budgets"]:
        if group["kind"] == "all" and STOCK in group["methods"]:
            organs = group["methods"][STOCK]["organs"]
            missed = unlearned_organs({o: m["dice"] for o, m in organs.items()})
            dice = group["methods"][STOCK]["dice"]["mean"]
            if missed:
                lines.append(f"- **Upper bound NOT converged**: stock nnU-Net with {group['label']} reaches mean Dice "
                             f"{dice:.3f}; organs below {ORGAN_LEARNED_DICE} Dice: {', '.join(missed)}. This training "
                             f"budget is too short for nnU-Net's schedule, so the comparison measures early "
                             f"learning speed, not converged label efficiency.")
            else:
                lines.append(f"- Upper bound: stock nnU-Net with {group['label']} reaches mean Dice {dice:.3f}, "
                             f"every organ >= {ORGAN_LEARNED_DICE}.")
    return lines


def _label_efficiency_plot(summary: dict, path: Path) -> None:
    groups = summary["budgets"]
    low = [g for g in groups if g["kind"] != "all"]
    upper = [g for g in groups if g["kind"] == "all"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.arange(len(low))
    for ax, metric in zip(axes, METRICS):
        for i, method in enumerate(METHODS):
            points = [(k, g["methods"][method][metric]) for k, g in enumerate(low) if method in g["methods"]]
            if not points:
                continue
            xs = np.array([p[0] for p in points]) + (i - 2) * 0.06
            ax.errorbar(xs, [p[1]["mean"] for p in points], yerr=[p[1]["std"] for p in points], marker="o",
                        capsize=3, color=COLORS[method], label=METHOD_LABELS[method])
        for g in upper:
            stats = g["methods"][STOCK][metric]
            ax.axhline(stats["mean"], color=COLORS[STOCK], linestyle="--",
                       label=f"stock nnU-Net, {g['label']} (upper bound)")
        ax.set_xticks(x, [g["label"] for g in low])
        ax.set_xlabel("labelled training data")
        ax.set_ylabel(f"held-out mean {'Dice' if metric == 'dice' else 'NSD'}")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Label efficiency (mean +- std over repeats)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _contour_figure(runs: list[TrainingRun], results_root: Path, plans: str, configuration: str, raw: Path,
                    case: str, labels: dict, path: Path) -> None:
    """Predicted organ contours of every method on the same axial slice of one held-out case
    (repeat 0 of each low-label budget), beside the reference."""
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "imagesTr" / f"{case}_0000{ending}")))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{case}{ending}")))
    z = int(np.argmax((reference > 0).sum(axis=(1, 2))))
    organs = {n: v for n, v in labels.items() if v != 0 and n != "ignore"}
    colors = plt.cm.tab10(np.arange(len(organs)))
    rows = sorted({(r.kind, r.budget, r.budget_label) for r in runs if r.kind != "all" and r.repeat == 0},
                  key=lambda k: budget_order(*k[:2]))
    methods = [m for m in METHODS if any(r.method == m for r in runs)]
    fig, axes = plt.subplots(len(rows), len(methods) + 1, figsize=(3 * (len(methods) + 1), 3 * len(rows)),
                             squeeze=False)
    low, high = np.percentile(image[z], (1, 99))

    def draw(ax, seg, title):
        ax.imshow(image[z], cmap="gray", vmin=low, vmax=high, origin="lower")
        for color, value in zip(colors, organs.values()):
            if (seg == value).any():
                ax.contour(seg == value, levels=[0.5], colors=[color], linewidths=1.2)
        ax.set_title(title, fontsize=9)
        ax.axis("off")

    for row, (kind, budget, label) in enumerate(rows):
        draw(axes[row, 0], reference[z], f"reference ({case}, slice {z})")
        for col, method in enumerate(methods, start=1):
            run = next((r for r in runs if (r.kind, r.budget, r.repeat, r.method) == (kind, budget, 0, method)), None)
            prediction = None if run is None else \
                run.fold_folder(results_root, plans, configuration) / "validation" / f"{case}{ending}"
            if prediction is None or not prediction.is_file():
                axes[row, col].axis("off")
                continue
            draw(axes[row, col], sitk.GetArrayFromImage(sitk.ReadImage(str(prediction)))[z],
                 f"{METHOD_LABELS[method]}\n{label}, repeat 0")
    handles = [plt.Line2D([], [], color=c, label=n) for c, n in zip(colors, organs)]
    fig.legend(handles=handles, loc="lower center", ncol=len(organs), fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(stats: dict) -> str:
    return f"{stats['mean']:.3f} +- {stats['std']:.3f}"


def budgets_line(runs: list[TrainingRun]) -> str:
    """Budgets with their repeats as the run catalogue holds them, not as the last command asked: a
    work folder extended in place (more repeats of one budget only) keeps its earlier budgets."""
    repeats: dict[str, set[int]] = {}
    for run in runs:
        if run.kind != "all":
            repeats.setdefault(run.budget_label, set()).add(run.repeat)
    listed = ", ".join(f"{label} x {len(r)} repeat(s)" for label, r in repeats.items()) or "none"
    return (f"- Budgets: {listed} (each repeat labels other cases; labelled slices lie in one volume); upper "
            f"bound: stock nnU-Net with every training label.")


def _partial_notice(runs: list[TrainingRun], pending: list[TrainingRun]) -> list[str]:
    if not pending:
        return []
    return [f"**Partial report: {len(runs)} of {len(runs) + len(pending)} runs finished.** The benchmark stopped "
            f"or is still running; the same command finishes it. Not run yet: "
            f"{', '.join(r.run_id for r in pending)}.", ""]


def segmentation_epochs(state: dict) -> int:
    """Epochs every segmentation run of a benchmark trained: the calibrated budget, else the preset's."""
    return state.get("budget_calibration", {}).get("chosen_epochs", state["settings"]["preset"]["finetune_epochs"])


def _runs_note(step: dict) -> str:
    runs = step.get("runs", [step["dice"]])  # work folders older than 0.4.0: one run per budget
    return f" ({len(runs)} runs, the worse per organ)" if len(runs) > 1 else ""


def _budget_calibration_line(state: dict) -> str:
    record = state.get("budget_calibration", {})
    if not record.get("steps"):
        return "- Segmentation budget: as given (not calibrated)."
    steps = "; ".join(f"{s['iterations']} iterations{_runs_note(s)} -> "
                      + (f"organs below {ORGAN_LEARNED_DICE} Dice: {', '.join(s['unlearned'])}" if s["unlearned"]
                         else "every organ learned")
                      for s in record["steps"])
    last = record["steps"][-1]
    outcome = "" if not last["unlearned"] or "chosen_epochs" not in record else \
        " **Doublings exhausted before every organ was learned: the budget is still too short.**"
    return (f"- Segmentation budget calibrated before any other run, on a validation volume of the training "
            f"split (stock nnU-Net trained on {', '.join(record['train'])}, validated on {', '.join(record['val'])}; "
            f"held-out cases unused): {steps}.{outcome}")


def method_settings(run: TrainingRun, results_root: Path, plans: str, configuration: str) -> dict | None:
    """What the run's trainer recorded about its augmentation and transfer (None before 0.9.0)."""
    path = run.fold_folder(results_root, plans, configuration) / METHOD_SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _settings_line(method: str, settings: dict) -> str:
    a = settings.get("augmentation", {})
    rotation = f"rotation {a['rotation_degrees'][0]:g} to {a['rotation_degrees'][1]:g} deg" \
        if a.get("rotation_degrees") else "no rotation"
    mirror = f"mirroring axes {a['mirror_axes']}" if a.get("mirror_axes") else "no mirroring"
    tta = f"mirroring TTA axes {a['tta_mirror_axes']}" if a.get("tta_mirror_axes") else "no mirroring TTA"
    t_star = f", transfer timestep t*={settings['transfer_timestep']}" \
        if settings.get("transfer_timestep") is not None else ""
    return f"  - {METHOD_LABELS[method]} (`{settings['trainer']}`): {rotation}, {mirror}, {tta}{t_star}"


def _markdown(meta: dict, summary: dict, state: dict, runs: list[TrainingRun], pending: list[TrainingRun],
              held_out: list[str], organs: list[str], now: str, versions: dict, machine: dict,
              settings_of: dict[str, dict | None]) -> str:
    preset = state["settings"]["preset"]
    recorded = {}
    for r in runs:
        if settings_of.get(r.run_id) and r.method not in recorded:
            recorded[r.method] = settings_of[r.run_id]
    keep_sides = state["settings"].get("keep_sides", False)
    lines = [f"# Label-efficiency benchmark: {meta['dataset']}, preset `{preset['name']}`", "",
             f"Date {now}. Machine: {machine['processor']}, {machine['cpu_count']} CPUs, {machine['memory_gib']} GiB, "
             f"GPU: {machine['gpu'] or 'none'}. torch {versions['torch']}, nnunetv2 {versions['nnunetv2']}, "
             f"monai {versions['monai']}, diffusers {versions['diffusers']}.", "",
             *_partial_notice(runs, pending),
             "## Settings", "",
             f"- Held-out cases ({len(held_out)}, never seen in pretraining or training): {', '.join(held_out)}.",
             f"- Configuration `{preset['configuration']}` of plans `{meta['plans']}` (nnU-Net's planner with axial "
             f"2D slices)" + (f"; reduced, inherits from `2d`: {preset['reduced']}" if preset["reduced"] else "") + ".",
             f"- Diffusion pretraining (`{state['settings'].get('pretrainer', PRETRAINER)}`): "
             f"{preset['pretrain_epochs']} x {preset['pretrain_iterations']} iterations on "
             f"the images of all non-held-out cases + unlabeled scans {state['settings']['unlabeled'] or '(none)'}"
             + (f", converted with --window {' '.join(f'{v:g}' for v in state['settings']['window'])}"
                if state["settings"].get("window") else "") + ".",
             f"- Every segmentation run: {segmentation_epochs(state)} epochs x {preset['finetune_iterations']} "
             f"iterations (same for every method), nnU-Net's final validation on the held-out cases "
             f"(sliding window, " + ("no mirroring TTA" if keep_sides else "mirroring TTA") +
             ", same for every method)." + (
                 f" Labels with a side ({', '.join(state['settings'].get('sided_labels', []))}): every arm trains "
                 f"without mirroring and rotates at most 15 degrees (the `_keepSides` trainers)." if keep_sides else ""),
             *(["- Augmentation and transfer, as each method's trainer recorded them:",
                *(_settings_line(m, v) for m, v in recorded.items())] if recorded else []),
             _budget_calibration_line(state),
             budgets_line(runs + pending),
             (f"- Synthetic-data augmentation (row \"{METHOD_LABELS[SYNTHETIC]}\"): {preset['synthetic_images']} "
              f"DDIM samples of the pretrained model, labelled by the same budget and repeat's fine-tune-all model "
              f"(voxels below {preset['synthetic_threshold']} top-class probability ignored), added to the labelled "
              f"cases; fine-tune all again with the same budget; at the smallest volume and slice budgets."
              if preset.get("synthetic_images") else "- Synthetic-data augmentation: not run (--synthetic-images 0)."),
             f"- Metrics: Dice and NSD (tolerance {meta['args']['nsd_tolerance']} mm) per organ with MONAI; "
             f"run score = mean over held-out cases of the organ mean.",
             "- No setting was tuned on the held-out cases (all fixed before the run).", "",
             "## Target: diffusion pretraining beats stock nnU-Net at the scarcest budgets", "",
             "Each method against stock nnU-Net on the same (labelled choice, held-out case) pairs; 95% interval "
             "from a hierarchical bootstrap over labelled choices and held-out cases; \"beats stock\" only when the "
             "interval excludes 0.", "",
             *(_verdicts(summary) or ["- (no low-label budget with stock and diffusion runs)"]),
             *_synthetic_verdicts(summary), *_upper_bound_check(summary), "",
             "## Mean Dice / NSD (mean +- std over repeats)", "", *_mean_table(summary)]
    lines += _variance_lines(summary)
    lines += ["", "## Per organ: Dice (NSD), mean over repeats and held-out cases", "",
              "| labelled data | method | " + " | ".join(organs) + " |", "|---|---|" + "---|" * len(organs)]
    for group in summary["budgets"]:
        for method, e in group["methods"].items():
            lines.append(f"| {group['label']} | {METHOD_LABELS[method]} | " + " | ".join(
                f"{e['organs'][o]['dice']:.3f} ({e['organs'][o]['nsd']:.3f})" for o in organs) + " |")
    lines += ["", "## Wall time", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in state["phases"].items()]
    for method in METHODS:
        seconds = [state["runs"][r.run_id] for r in runs if r.method == method and r.run_id in state["runs"]]
        if seconds:
            lines.append(f"| training + validation, {METHOD_LABELS[method]} ({len(seconds)} run(s), mean "
                         f"{np.mean(seconds):.0f} s/run) | {sum(seconds):.0f} |")
    lines += ["", "## Plots", "", "![label efficiency](label_efficiency.png)", "",
              "![contours](contours.png)", "", "Raw numbers: `results.json`."]
    return "\n".join(lines) + "\n"


def write_cv_report(out: Path, fold_reports: list[Path]) -> Path:
    """The cross-validated report: every fold's runs (from its ``results.json``) paired with stock
    on (fold, labelled choice, held-out case), so every volume is tested once and each fold's
    pretraining run counts as one more source of spread."""
    runs, metrics, folds, wall = [], {}, [], {}
    for k, folder in enumerate(fold_reports):
        if not (folder / "results.json").is_file():
            folds.append({"fold": k, "report": None, "held_out": None, "pending_runs": ["(not started)"]})
            continue
        result = json.loads((folder / "results.json").read_text())
        for r in result["runs"]:
            run = TrainingRun(r["method"], r["kind"], r["budget"], r["repeat"], r["dataset"], r["fold"],
                              tuple(r["train"]), cv_fold=k)
            runs.append(run)
            metrics[run.run_id] = {"cases": r["cases"]}
        folds.append({"fold": k, "report": str(folder.relative_to(out) / "report.md"), "held_out": result["held_out"],
                      "pending_runs": result["pending_runs"]})
        wall[k] = sum(result["wall_time_s"]["phases"].values()) + sum(result["wall_time_s"]["runs"].values())
    summary = summarize(runs, metrics)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine, versions = _machine(), _versions()
    write_json_atomically(out / "results.json", {
        "date": now, "machine": machine, "versions": versions, "folds": folds, "wall_time_s": wall,
        "runs": [{"run_id": r.run_id, "cv_fold": r.cv_fold, "method": r.method, "kind": r.kind, "budget": r.budget,
                  "repeat": r.repeat, "train": list(r.train), "cases": metrics[r.run_id]["cases"]} for r in runs],
        "summary": summary})
    unfinished = [f["fold"] for f in folds if f["pending_runs"]]
    lines = [f"# Cross-validated label-efficiency benchmark: {len(folds)} folds", "",
             f"Date {now}. Machine: {machine['processor']}, {machine['cpu_count']} CPUs, GPU: {machine['gpu'] or 'none'}. "
             f"nnunetv2 {versions['nnunetv2']}, torch {versions['torch']}.", "",
             *([f"**Partial**: folds {unfinished} have runs missing (see their reports).", ""] if unfinished else []),
             "Every volume is held out in exactly one fold. Each fold has its own diffusion pretraining on its "
             "other volumes (so the folds' pretraining runs are different seeds too), and every one of its other "
             "volumes is in turn the labelled choice.", "",
             "| fold | held-out cases | report | wall time (s) |", "|---|---|---|---|",
             *[f"| {f['fold']} | {', '.join(f['held_out'] or [])} | "
               + (f"[{f['report']}]({f['report']})" if f["report"] else "not started")
               + f" | {wall.get(f['fold'], 0):.0f} |" for f in folds],
             "", "## Target: diffusion pretraining beats stock nnU-Net at the scarcest budgets", "",
             *(_verdicts(summary) or ["- (no low-label budget with stock and diffusion runs)"]),
             "", "## Mean Dice / NSD (mean +- std over labelled choices of all folds)", "", *_mean_table(summary),
             *_variance_lines(summary), "", "Raw numbers: `results.json`."]
    (out / "report.md").write_text(with_hand_notes("\n".join(lines) + "\n", out))
    return out / "report.md"


def _external_results(external: dict, runs: list[TrainingRun], work: Path) -> dict:
    files = {r.run_id: work / EXTERNAL_METRICS / f"{r.run_id}.json" for r in runs}
    done = [r for r in runs if files[r.run_id].is_file()]
    metrics = {r.run_id: json.loads(files[r.run_id].read_text()) for r in done}
    return {**external, "runs": [{"run_id": r.run_id, "cases": metrics[r.run_id]["cases"]} for r in done],
            "summary": summarize(done, metrics)}


def with_hand_notes(report: str, folder: Path) -> str:
    """``report`` followed by the folder's hand-written ``notes.md``, if any: the user's remarks on a
    run survive every regeneration of the report."""
    notes = folder / NOTES_FILE
    if not notes.is_file():
        return report
    return f"{report.rstrip()}\n\n## Notes (from `{NOTES_FILE}`, written by hand)\n\n{notes.read_text().strip()}\n"


def write_report(out: Path, runs: list[TrainingRun], work: Path, state: dict, labels: dict, held_out: list[str],
                 pretrain_folder: Path, meta: dict, pending: Sequence[TrainingRun] = (),
                 external: dict | None = None) -> Path:
    """Report of the finished ``runs``; ``pending`` (not run yet) are named, so a partial report
    cannot pass for a complete one. ``external`` (``folder``, ``cases``): the runs' scores on an
    external test set are read from ``work/metrics_external`` and reported beside."""
    out.mkdir(parents=True, exist_ok=True)
    pending = list(pending)
    metrics = {r.run_id: json.loads((work / "metrics" / f"{r.run_id}.json").read_text()) for r in runs}
    summary = summarize(runs, metrics)
    organs = [n for n, v in labels.items() if v != 0 and n != "ignore"]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    versions, machine = _versions(), _machine()
    preset = state["settings"]["preset"]
    raw = work / "nnUNet_raw" / meta["dataset"]
    _label_efficiency_plot(summary, out / "label_efficiency.png")
    _contour_figure(runs, work / "nnUNet_results", meta["plans"], preset["configuration"], raw, held_out[0], labels,
                    out / "contours.png")
    samples = pretrain_folder / "samples" / "samples.png"
    settings_of = {r.run_id: method_settings(r, work / "nnUNet_results", meta["plans"], preset["configuration"])
                   for r in runs}
    external_results = _external_results(external, runs, work) if external else None
    write_json_atomically(out / "results.json", {
        "date": now, "machine": machine, "versions": versions, "meta": meta, "settings": state["settings"],
        "budget_calibration": state.get("budget_calibration"), "held_out": held_out,
        "wall_time_s": {"phases": state["phases"], "runs": state["runs"]},
        "runs": [{"run_id": r.run_id, "method": r.method, "trainer": r.trainer, "kind": r.kind, "budget": r.budget,
                  "repeat": r.repeat, "dataset": r.dataset, "fold": r.fold, "train": list(r.train),
                  "method_settings": settings_of[r.run_id], "cases": metrics[r.run_id]["cases"]}
                 for r in runs],
        "pending_runs": [r.run_id for r in pending],
        "summary": summary, "external_test": external_results})
    report = _markdown(meta, summary, state, runs, pending, held_out, organs, now, versions, machine, settings_of)
    if external:
        report += "\n".join(_external_section(external_results)) + "\n"
    if samples.is_file():
        (out / "pretraining_samples.png").write_bytes(samples.read_bytes())
        report += "\n![DDIM samples of the pretrained model](pretraining_samples.png)\n"
    (out / "report.md").write_text(with_hand_notes(report, out))
    return out / "report.md"
