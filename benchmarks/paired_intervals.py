"""95% intervals for committed benchmark results: the paired statistics of
``nnunet_diffusion_pretrain.evaluation.paired_statistics`` (hierarchical bootstrap over labelled
choices and held-out cases, Wilcoxon p, variance shares), computed from each report folder's
``results.json`` (its per-case, per-organ Dice). Nothing is trained or predicted; the results of
reports written before package 0.9.0, which had no intervals, get theirs here.

    python benchmarks/paired_intervals.py benchmarks/results/btcv6_cpu_pretrain80_b benchmarks/results/chaos20_cpu3200

Writes benchmarks/results/paired_intervals/{results.json,report.md}; report.md ends with the
folder's hand-written notes.md, if any.
"""
from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

from nnunet_diffusion_pretrain.evaluation.paired_statistics import verdict
from nnunet_diffusion_pretrain.evaluation.report import summarize, with_hand_notes
from nnunet_diffusion_pretrain.evaluation.run_catalogue import METHOD_LABELS, STOCK, TrainingRun
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import write_json_atomically

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "paired_intervals"


def intervals(folder: Path) -> dict:
    results = json.loads((folder / "results.json").read_text())
    runs = [TrainingRun(r["method"], r["kind"], r["budget"], r["repeat"], r["dataset"], r["fold"], tuple(r["train"]))
            for r in results["runs"]]
    metrics = {run.run_id: {"cases": r["cases"]} for run, r in zip(runs, results["runs"])}
    summary = summarize(runs, metrics)
    return {"folder": str(folder.relative_to(REPO)), "date": results["date"],
            "package": results["versions"].get("nnunet-diffusion-pretrain"),
            "budgets": [{"label": g["label"], "kind": g["kind"], "budget": g["budget"],
                         "methods": {m: {"dice": e["dice"], "paired": e.get("paired"), "variance": e["variance"]}
                                     for m, e in g["methods"].items()}}
                        for g in summary["budgets"] if g["kind"] != "all"]}


def markdown(entries: list[dict]) -> str:
    lines = ["# Paired intervals of committed benchmark results", "",
             f"Date {datetime.now(timezone.utc).isoformat(timespec='seconds')}, {platform.processor() or platform.machine()}; "
             "computed from each folder's results.json (no training). Each method against stock nnU-Net on the same "
             "(labelled choice, held-out case) pairs; 95% interval from a hierarchical bootstrap over labelled choices "
             "and held-out cases (10,000 replicates, seed 0); \"beats stock\" only when it excludes 0.", "",
             "| results | labelled data | method | Dice (mean +- std over choices) | diff vs stock | 95% CI | wins/pairs | "
             "Wilcoxon p | verdict | variance: choice / case |", "|---|---|---|---|---|---|---|---|---|---|"]
    for entry in entries:
        for group in entry["budgets"]:
            for method, e in group["methods"].items():
                shares = e["variance"]["shares_of_sum_of_squares"]
                t = e["paired"]
                lines.append(f"| [{Path(entry['folder']).name}](../{Path(entry['folder']).name}/report.md) | "
                             f"{group['label']} | {METHOD_LABELS[method]} | {e['dice']['mean']:.3f} +- "
                             f"{e['dice']['std']:.3f} | "
                             + (f"{t['mean_diff']:+.3f} | [{t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}] | "
                                f"{t['wins']}/{t['n_pairs']} | {t['wilcoxon_p']:.3g} | {verdict(t)} | "
                                if method != STOCK and t else "| | | | | ")
                             + f"{shares['labelled_choice']:.0%} / {shares['held_out_case']:.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="report folders holding results.json")
    args = parser.parse_args()
    entries = [intervals(f.resolve()) for f in args.folders]
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_atomically(OUT / "results.json", {"entries": entries})
    (OUT / "report.md").write_text(with_hand_notes(markdown(entries), OUT))
    print(f"written: {OUT / 'report.md'}")


if __name__ == "__main__":
    main()
