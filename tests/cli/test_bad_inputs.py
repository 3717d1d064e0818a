"""Bad inputs, one table: each row builds a broken input, runs the command a user would run, and
expects a non-zero exit, one ``ERROR:`` line naming the file and the problem (no traceback), and
no change to anything that was on disk before. The README's troubleshooting table lists the same."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import command, lowlabel_fold, run, tree_snapshot
from nnunet_diffusion_pretrain.phantom import LABELS, make_phantom_volume

SHAPE = (16, 48, 48)


@dataclass
class Case:
    args: list[str]
    names: str  # the file (or identifier) the error must name
    problem: str  # words of the problem the error must say
    watched: list[Path]  # folders whose existing files must not change


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return make_phantom_volume(np.random.default_rng(seed), SHAPE)


def _write(array: np.ndarray, path: Path, spacing=(6.0, 6.0, 8.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _dicom_series(volume: np.ndarray, folder: Path, series_uid: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.GetImageFromArray(volume.astype(np.int16)), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.shape[0]):
        s = image[:, :, z]
        for tag, value in (("0020|000e", series_uid), ("0020|0013", str(z + 1)), ("0008|0060", "CT"),
                           ("0020|0032", f"0\\0\\{z * 8.0}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0008|0018", f"{series_uid}.{z + 1}")):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}_{z:03d}.dcm"))
        writer.Execute(s)


# ---- the unlabeled pool: nnUNetv2_diffusion_add_unlabeled ------------------------------------------

def _pool_case(ctx: dict, problem: str, make: Callable[[Path], Path]) -> Case:
    """``make`` writes the bad input into the folder and returns the file the error must name."""
    folder = ctx["tmp"] / "input"
    made = make(folder)
    return Case([command("nnUNetv2_diffusion_add_unlabeled"), "-d", str(ctx["id"]), "-c", "2d", "-i", str(folder)],
                str(made), problem, [ctx["pool"]])


def truncated_nifti(ctx):
    def make(folder):
        good = _write(_volume()[0], folder / "whole.nii.gz")
        (folder / "cut.nii.gz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        good.unlink()
        return folder / "cut.nii.gz"
    return _pool_case(ctx, "cannot be read", make)


def corrupt_nifti(ctx):
    def make(folder):
        folder.mkdir(parents=True)
        (folder / "noise.nii.gz").write_bytes(np.random.default_rng(0).bytes(5000))
        return folder / "noise.nii.gz"
    return _pool_case(ctx, "cannot be read", make)


def image_4d(ctx):
    def make(folder):
        volume = sitk.GetImageFromArray(_volume()[0])
        folder.mkdir(parents=True)
        sitk.WriteImage(sitk.JoinSeries([volume] * 3), str(folder / "timeseries.nii.gz"))
        return folder / "timeseries.nii.gz"
    return _pool_case(ctx, "3 channel(s), the dataset expects 1", make)


def nan_voxels(ctx):
    def make(folder):
        volume = _volume()[0]
        volume[4, 20, 20] = np.nan
        return _write(volume, folder / "with_nan.mha")
    return _pool_case(ctx, "NaN or infinite", make)


def infinite_voxels(ctx):
    def make(folder):
        volume = _volume()[0]
        volume[4, 20, 20] = np.inf
        return _write(volume, folder / "with_inf.nii.gz")  # ITK would read inf as 0: checked with nibabel
    return _pool_case(ctx, "NaN or infinite", make)


def constant_image(ctx):
    return _pool_case(ctx, "same value",
                      lambda folder: _write(np.full(SHAPE, -1000, np.float32), folder / "flat.nii.gz"))


def dicom_two_series(ctx):
    def make(folder):
        _dicom_series(np.round(_volume(1)[0]), folder / "patient", "1.2.826.0.1.1")
        _dicom_series(np.round(_volume(2)[0]), folder / "patient", "1.2.826.0.1.2")
        return folder / "patient"
    return _pool_case(ctx, "holds 2 DICOM series", make)


def wrong_channel_count(ctx):
    def make(folder):
        _write(_volume()[0], folder / "mr_0000.nii.gz")
        _write(_volume()[0], folder / "mr_0001.nii.gz")
        return folder / "mr_0000.nii.gz"
    return _pool_case(ctx, "2 channel(s), the dataset expects 1", make)


# ---- labelled data: a converter and the benchmark on an existing raw dataset ----------------------

def _convert_pairs(ctx, bad_label: Callable[[np.ndarray], tuple[np.ndarray, tuple]], problem: str) -> Case:
    source = ctx["tmp"] / "download"
    image, label = _volume()
    _write(image, source / "image_1.nii.gz")
    _write(label.astype(np.uint8), source / "label_1.nii.gz")
    bad, spacing = bad_label(label)
    _write(image, source / "image_2.nii.gz")
    _write(bad, source / "label_2.nii.gz", spacing)
    return Case([command("nnUNetv2_convert_btcv6_subset"), "-i", str(source), "-d", "777"],
                str(source / "label_2.nii.gz"), problem, [ctx["raw"]])


def label_not_in_map(ctx):
    return _convert_pairs(ctx, lambda label: (np.where(label == 4, 9, label).astype(np.uint8), (6.0, 6.0, 8.0)),
                          "label values [9] are not in the dataset's label map")


def label_not_integer(ctx):
    return _convert_pairs(ctx, lambda label: (label.astype(np.float32) * 0.5, (6.0, 6.0, 8.0)),
                          "label values are not integers")


def geometry_mismatch(ctx):
    return _convert_pairs(ctx, lambda label: (label.astype(np.uint8), (6.0, 6.0, 5.0)), "spacing")


def case_named_outside(ctx):
    """dataset.json's ``dataset`` mapping names cases freely; ``../x`` must never become a path."""
    dataset = ctx["tmp"] / "Dataset778_Traversal"
    image, label = _volume()
    _write(image, dataset / "imagesTr" / "a_0000.nii.gz")
    _write(label.astype(np.uint8), dataset / "labelsTr" / "a.nii.gz")
    (dataset / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 1, "file_ending": ".nii.gz",
        "dataset": {"../x": {"images": ["imagesTr/a_0000.nii.gz"], "label": "labelsTr/a.nii.gz"}}}))
    return Case([command("nnUNetv2_diffusion_benchmark"), "--raw-dataset", str(dataset), "--num-held-out", "1",
                 "-w", str(ctx["tmp"] / "work"), "-o", str(ctx["tmp"] / "report")],
                "'../x'", "not a plain file name", [dataset, ctx["tmp"]])


# ---- checkpoints --------------------------------------------------------------------------------

def truncated_checkpoint(ctx):
    cut = ctx["tmp"] / "cut.pth"
    cut.write_bytes(ctx["checkpoint"].read_bytes()[:100_000])
    out = ctx["tmp"] / "samples"
    out.mkdir()
    (out / "kept.txt").write_text("earlier work")
    return Case([command("nnUNetv2_diffusion_sample"), "-d", str(ctx["id"]), "-c", "2d", "-chk", str(cut), "-n", "1",
                 "-o", str(out), "--overwrite"], str(cut), "cannot be loaded safely", [out, ctx["tmp"]])


def checkpoint_of_other_plans(ctx):
    """A 2d pretraining checkpoint handed to a 3d_fullres fine-tuning through stock nnUNetv2_train."""
    fold, _ = ctx["fold"]
    return Case([command("nnUNetv2_train"), str(ctx["id"]), "3d_fullres", str(fold), "-tr",
                 "nnUNetTrainerDiffusionFinetune", "-device", "cpu", "-pretrained_weights", str(ctx["checkpoint"])],
                str(ctx["checkpoint"]), "pretrained for other plans", [ctx["results"]])


TABLE = [truncated_nifti, corrupt_nifti, image_4d, nan_voxels, infinite_voxels, constant_image, dicom_two_series,
         wrong_channel_count, label_not_in_map, label_not_integer, geometry_mismatch, case_named_outside,
         truncated_checkpoint, checkpoint_of_other_plans]


@pytest.fixture(scope="module")
def filled_pool(nnunet_env, planned_phantom, tmp_path_factory) -> dict:
    pool = tmp_path_factory.mktemp("bad_input_pool")
    env = dict(nnunet_env, nnUNet_diffusion_pool=str(pool))
    run([command("nnUNetv2_diffusion_add_unlabeled"), "-d", str(planned_phantom["id"]), "-c", "2d", "-i",
         str(planned_phantom["unlabeled"])], env)
    return {"env": env, "pool": pool}


@pytest.mark.parametrize("row", TABLE, ids=[f.__name__ for f in TABLE])
def test_bad_input_gets_one_clear_line_and_changes_nothing(row, filled_pool, planned_phantom, pretrained_checkpoint,
                                                          tmp_path):
    env = dict(filled_pool["env"], nnUNet_raw=str(tmp_path / "raw"))
    (tmp_path / "raw").mkdir()
    shutil.copytree(planned_phantom["raw"], tmp_path / "raw" / planned_phantom["name"])  # an existing dataset
    ctx = {"tmp": tmp_path, "id": planned_phantom["id"], "pool": filled_pool["pool"], "raw": tmp_path / "raw",
           "checkpoint": pretrained_checkpoint, "results": Path(env["nnUNet_results"]),
           "fold": lowlabel_fold(planned_phantom, env) if row is checkpoint_of_other_plans else None}
    case = row(ctx)
    before = {folder: tree_snapshot(folder) for folder in case.watched}
    result = run(case.args, env, check=False, timeout=600)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert case.names in errors[0] and case.problem in errors[0], errors[0]
    for folder, files in before.items():
        after = tree_snapshot(folder)
        assert {k: after.get(k) for k in files} == files, f"{folder} changed"
    if row is case_named_outside:
        assert not (tmp_path / "work").exists()  # refused before the work folder (and nnU-Net's) existed
    if row is truncated_checkpoint:
        assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["kept.txt"]
