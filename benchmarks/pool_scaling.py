"""Unlabeled-pool preparation at scale: time per case, peak memory, disk use.

Writes a synthetic pool of small phantom CT volumes, plans a phantom dataset with stock nnU-Net,
then runs ``nnUNetv2_diffusion_add_unlabeled`` on the first N volumes for several N and worker
counts (``-np``), each into an empty pool. Memory is sampled every 50 ms as the summed resident
memory of the command and all its worker processes (from /proc), so "memory does not grow with
the pool size" is checked directly: compare the peaks at N=50 and N=200.

    python benchmarks/pool_scaling.py --cases 50 200 --np 1 2

Writes benchmarks/results/pool_scaling/<shape>/{results.json,report.md,memory.png}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import numpy as np

from nnunet_diffusion_pretrain.subprocess_steps import console_script
from nnunet_diffusion_pretrain.phantom import DEFAULT_SHAPE, write_phantom_dataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASET_ID, DATASET_NAME = 992, "PoolScaling"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants."""
    tree, todo, total = _children(), [pid], 0
    while todo:
        p = todo.pop()
        todo += tree.get(p, [])
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            pass
    return total


def run_measured(args: list[str], env: dict, log: Path) -> dict:
    start, samples = time.time(), []
    with open(log, "w") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            samples.append((time.time() - start, tree_rss_bytes(process.pid)))
            time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed, see {log}")
    return {"seconds": time.time() - start, "peak_rss_mib": max(s[1] for s in samples) / 2**20,
            "rss_trace": [(round(t, 2), round(r / 2**20, 1)) for t, r in samples[::4]]}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--np", type=int, nargs="+", default=[1, 2], dest="workers")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), help="volume shape z y x")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "pool_scaling")
    args = parser.parse_args()
    shape = tuple(args.shape)
    name = "x".join(map(str, shape))
    work, out = args.work.resolve() / name, REPO / "benchmarks" / "results" / "pool_scaling" / name
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"))
    raw = work / "raw" / f"Dataset{DATASET_ID}_{DATASET_NAME}"
    all_unlabeled = work / "unlabeled_all"
    if not (raw / "dataset.json").is_file():
        shutil.rmtree(work, ignore_errors=True)
        write_phantom_dataset(raw, num_labelled=5, unlabeled_folder=all_unlabeled, num_unlabeled=max(args.cases),
                              seed=7, shape=shape)
        subprocess.run([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "3d_fullres",
                        "-np", "2"], env=env, check=True, capture_output=True)
    volumes = sorted(all_unlabeled.iterdir())
    results = []
    for n in args.cases:
        subset = work / f"unlabeled_{n}"
        if not subset.is_dir():
            subset.mkdir()
            for v in volumes[:n]:
                (subset / v.name).symlink_to(v)
        for workers in args.workers:
            pool = work / f"pool_{n}_np{workers}"
            shutil.rmtree(pool, ignore_errors=True)
            print(f"{n} cases, -np {workers}", flush=True)
            measured = run_measured([console_script("nnUNetv2_diffusion_add_unlabeled"), "-d", str(DATASET_ID),
                                     "-c", "2d", "3d_fullres", "-i", str(subset), "-np", str(workers)],
                                    dict(env, nnUNet_diffusion_pool=str(pool)), work / f"pool_{n}_np{workers}.log")
            manifests = [json.loads(m.read_text()) for m in pool.rglob("pool.json")]
            assert all(len(m["cases"]) == n for m in manifests) and len(manifests) == 2
            results.append({"cases": n, "workers": workers, **measured,
                            "seconds_per_case": measured["seconds"] / n, "pool_mib": folder_bytes(pool) / 2**20,
                            "input_mib": sum(v.resolve().stat().st_size for v in volumes[:n]) / 2**20})
            print({k: v for k, v in results[-1].items() if k != "rss_trace"}, flush=True)

    settings = {"shape_zyx": shape, "configurations": ["2d", "3d_fullres"], "cases": args.cases,
                "workers": args.workers}
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine()}
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (out / "results.json").write_text(json.dumps({"date": date, "machine": machine, "settings": settings,
                                                  "results": results}, indent=1))
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        trace = np.array(r["rss_trace"])
        ax.plot(trace[:, 0] / r["cases"], trace[:, 1], label=f"{r['cases']} cases, -np {r['workers']}")
    ax.set_xlabel("seconds / number of cases (progress)")
    ax.set_ylabel("resident memory, command + workers (MiB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=120)
    lines = ["# Unlabeled-pool preparation at scale", "",
             f"{date}, {machine['cpu_count']} CPUs ({machine['platform']}). `benchmarks/pool_scaling.py`: phantom "
             f"CT volumes of {name} voxels (z, y, x), preprocessed "
             "for 2d and 3d_fullres in one `nnUNetv2_diffusion_add_unlabeled` call per row, into an empty pool. "
             "Peak memory: summed resident memory of the command and its workers, sampled every 50 ms.", "",
             "| cases | -np | seconds | seconds per case | peak memory (MiB) | pool on disk (MiB) | input (MiB) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['cases']} | {r['workers']} | {r['seconds']:.1f} | {r['seconds_per_case']:.3f} | "
              f"{r['peak_rss_mib']:.0f} | {r['pool_mib']:.1f} | {r['input_mib']:.1f} |" for r in results]
    lines += ["", "![memory over time](memory.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"written: {out / 'report.md'}")


if __name__ == "__main__":
    main()
