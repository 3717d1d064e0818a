"""Shared fixtures: an nnU-Net environment in a temporary folder with a small planned phantom.

Everything runs through the real console commands (``nnUNetv2_*``) in subprocesses, as a user
would run them; planning happens once per test session.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from filelock import FileLock

from nnunet_diffusion_pretrain.subprocess_steps import console_script as command
from nnunet_diffusion_pretrain.subprocess_steps import ext_trainer_folder
from nnunet_diffusion_pretrain.phantom import write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_TRAINERS = Path(__file__).resolve().parent / "ext_trainers_for_tests"
PHANTOM_ID, PHANTOM_NAME = 991, "TestPhantom"
PHANTOM_SHAPE = (16, 48, 48)
RESENC_TINY = "2d_tiny"  # a configuration inheriting from 2d with a CPU-sized batch, the nnU-Net way


# The longest test files (minutes each on 2 cores), longest first. `make test` hands whole files to
# two xdist workers in collection order (--no-loadscope-reorder): started first, they run beside
# each other and the short files fill the gaps, where ordering by test count left a long one last.
LONGEST_FILES_FIRST = ("evaluation/test_benchmark.py", "transfer/test_transfer.py",
                       "evaluation/test_cross_validation.py", "training/test_crash_resume.py",
                       "pool/test_shared_data.py", "training/test_pretraining.py",
                       "dataset_conversion/test_dataset_conversion.py", "cli/test_bad_inputs.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(item.fspath).relative_to(Path(__file__).parent).as_posix()
        return LONGEST_FILES_FIRST.index(path) if path in LONGEST_FILES_FIRST else len(LONGEST_FILES_FIRST)
    items.sort(key=rank)  # stable: the other files and every file's own tests keep their order


def run(args: list[str], env: dict, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, text=True, encoding="utf-8",
                            errors="replace", timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed with {result.returncode}\nSTDOUT:\n{result.stdout[-4000:]}"
                             f"\nSTDERR:\n{result.stderr[-4000:]}")
    return result


def _sigint_as_in_a_terminal() -> None:
    """Ctrl-C reaches a command started in a terminal; a test suite started in the background of a
    non-interactive shell (CI, nohup) ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_when(args: list[str], env: dict, condition: Callable[[], bool], log: Path, timeout: float = 600,
              sig: signal.Signals = signal.SIGKILL) -> None:
    """Start ``args``, send ``sig`` to its whole process group as soon as ``condition()`` holds
    (SIGINT: Ctrl-C in a terminal); whatever of the group outlives the signal is then SIGKILLed."""
    with open(log, "w") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_sigint_as_in_a_terminal)
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"{' '.join(args)} ended (code {process.returncode}) before the kill point:\n"
                                 f"{log.read_text()[-3000:]}")
        if time.time() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"kill point not reached within {timeout} s")
        time.sleep(0.01)
    os.killpg(process.pid, sig)
    process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory) -> dict:
    """Environment for subprocesses: fresh nnU-Net folders, our trainers findable, CPU-friendly."""
    root = tmp_path_factory.mktemp("nnunet")
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_extTrainer": os.pathsep.join([ext_trainer_folder(), str(TEST_TRAINERS)]),
        "nnUNet_def_n_proc": "1", "nnUNet_compile": "f", "PYTHONUNBUFFERED": "1",
        "nnUNet_diffusion_sampling_steps": "4",
    })
    env.pop("nnUNet_diffusion_pool", None)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[k]).mkdir(parents=True)
    return env


def training_env(env: dict, **budget: int) -> dict:
    """Environment for ``nnUNetv2_train``: augmentation in-process and a tiny budget."""
    out = dict(env, nnUNet_n_proc_DA="0")
    out.update({f"nnUNet_{k}": str(v) for k, v in budget.items()})
    return out


def _plan_phantom(root: Path, env: dict) -> None:
    """Phantom dataset 991 with unlabeled scans in ``root``, planned and preprocessed there."""
    env = dict(env, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"))
    raw = root / "raw" / f"Dataset{PHANTOM_ID}_{PHANTOM_NAME}"
    write_phantom_dataset(raw, num_labelled=5, unlabeled_folder=root / "unlabeled_ct", num_unlabeled=4, seed=1,
                          shape=PHANTOM_SHAPE)
    run([command("nnUNetv2_plan_and_preprocess"), "-d", str(PHANTOM_ID), "-c", "2d", "3d_fullres", "-np", "2",
         "--verify_dataset_integrity"], env)
    run([command("nnUNetv2_plan_experiment"), "-d", str(PHANTOM_ID), "-pl", "nnUNetPlannerResEncM"], env)
    resenc_file = root / "preprocessed" / raw.name / "nnUNetResEncUNetMPlans.json"
    resenc = json.loads(resenc_file.read_text())
    resenc["configurations"][RESENC_TINY] = {"inherits_from": "2d", "batch_size": 4}
    resenc_file.write_text(json.dumps(resenc, indent=2))
    (root / "planned").touch()


@pytest.fixture(scope="session")
def planned_phantom(nnunet_env, tmp_path_factory) -> dict:
    """Phantom dataset 991 planned for 2d and 3d_fullres (default and ResEnc-M plans), plus a folder
    of unlabeled scans. Returns paths. Planned once per test run (about 1.5 min), in a folder the
    xdist workers share; each worker gets its own copy, since tests add to it."""
    run_root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_root = run_root.parent  # this run's folder above the workers' (never an earlier run's)
    shared = run_root / "planned_phantom"
    with FileLock(str(run_root / "planned_phantom.lock")):
        if not (shared / "planned").is_file():
            shutil.rmtree(shared, ignore_errors=True)  # a worker killed while planning
            _plan_phantom(shared, nnunet_env)
    name = f"Dataset{PHANTOM_ID}_{PHANTOM_NAME}"
    raw, preprocessed = Path(nnunet_env["nnUNet_raw"]) / name, Path(nnunet_env["nnUNet_preprocessed"]) / name
    shutil.copytree(shared / "raw" / name, raw)
    shutil.copytree(shared / "preprocessed" / name, preprocessed)
    unlabeled = tmp_path_factory.mktemp("unlabeled_ct")
    shutil.copytree(shared / "unlabeled_ct", unlabeled, dirs_exist_ok=True)
    return {"raw": raw, "preprocessed": preprocessed, "unlabeled": unlabeled, "name": name, "id": PHANTOM_ID}


def tree_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below ``folder``: proves a command changed nothing there."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def pretrained_checkpoint(nnunet_env, planned_phantom, tmp_path_factory) -> Path:
    """A short 2d pretraining of the phantom (cosine schedule), copied out of the results folder."""
    trainer = "nnUNetTrainerDiffusionPretrain_cosine"
    env = training_env(nnunet_env, num_epochs=2, num_iterations_per_epoch=5, num_val_iterations_per_epoch=1)
    env["nnUNet_diffusion_num_samples"] = "1"
    run([command("nnUNetv2_train"), str(planned_phantom["id"]), "2d", "all", "-tr", trainer, "-device", "cpu"], env)
    source = Path(nnunet_env["nnUNet_results"]) / planned_phantom["name"] / f"{trainer}__nnUNetPlans__2d" / \
        "fold_all" / "checkpoint_final.pth"
    target = tmp_path_factory.mktemp("pretrained") / "diffusion_pretrained.pth"
    target.write_bytes(source.read_bytes())
    return target


def lowlabel_fold(planned_phantom, env) -> tuple[int, list[str]]:
    """The phantom's 1-labelled-case fold (repeat 0) and its held-out cases."""
    run([command("nnUNetv2_make_lowlabel_splits"), "-d", str(planned_phantom["id"]), "--num-labeled", "1",
         "--repeats", "2", "--num-val", "2", "--seed", "0"], env)
    manifest = json.loads((planned_phantom["preprocessed"] / "lowlabel_splits.json").read_text())
    entry = next(f for f in manifest["folds"] if f["kind"] == "cases" and f["budget"] == 1 and f["repeat"] == 0)
    return entry["fold"], manifest["held_out"]
