"""The pretraining pool: unlabeled scans preprocessed with a labelled dataset's own plans.

Pool cases live outside the labelled dataset (``$nnUNet_diffusion_pool``, default
``$nnUNet_preprocessed/nnUNet_diffusion_pool``) in ``<DatasetXXX_Name>/<data_identifier>/``, so
nnU-Net's raw and preprocessed folders, its CT statistics and its splits never change. Each case is
preprocessed exactly as nnU-Net preprocesses an inference image (``run_case_npy`` without a label)
and stored as blosc2 data plus a properties pickle, nnU-Net's own format, without a label file.

Adding is restartable and all-or-nothing per run if asked: every case is first written to
``.staging/`` (temporary name, then rename; its JSON record is written last and marks it complete),
and only then moved into the pool and recorded in ``pool.json``. ``pool.json`` is the list of
cases; a file that it does not name is never used.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import blosc2
import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.hu_window import HUWindow
from nnunet_diffusion_pretrain.planned_dataset import PlannedDataset
from nnunet_diffusion_pretrain.pool.pool_checks import LabelledReference, intensity_figures, likely_cause, mismatch
from nnunet_diffusion_pretrain.pool.unlabeled_inputs import (IMAGE_FILE_ENDINGS, UnlabeledInput, UnreadableCaseError,
                                                        discover_unlabeled_inputs, dominant_orientation,
                                                        read_unlabeled_input)

POOL_ENV = "nnUNet_diffusion_pool"
MANIFEST = "pool.json"
MAX_REFERENCE_CASES = 20  # labelled cases measured for the pool checks (evenly spaced)


def pool_root() -> Path:
    if os.environ.get(POOL_ENV):
        return Path(os.environ[POOL_ENV])
    if not os.environ.get("nnUNet_preprocessed"):
        raise UserFacingError(f"neither {POOL_ENV} nor nnUNet_preprocessed is set")
    return Path(os.environ["nnUNet_preprocessed"]) / "nnUNet_diffusion_pool"


def pool_folder(dataset: PlannedDataset) -> Path:
    return pool_root() / dataset.name / dataset.configuration_manager.data_identifier


def preprocessing_fingerprint(plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> dict:
    """Everything in the plans that changes a preprocessed image; a pool made under other values
    would silently train on differently normalised data, so it is refused. (Plans that share a data
    identifier, such as nnUNetPlans and the ResEnc presets, share their preprocessed data, as in nnU-Net.)"""
    cm, pm = configuration_manager, plans_manager
    return {
        "data_identifier": cm.data_identifier,
        "spacing": list(cm.spacing),
        "transpose_forward": list(pm.transpose_forward),
        "normalization_schemes": list(cm.normalization_schemes),
        "use_mask_for_norm": list(cm.use_mask_for_norm),
        "foreground_intensity_properties_per_channel": pm.foreground_intensity_properties_per_channel,
        "resampling_fn_data": cm.configuration["resampling_fn_data"],
        "resampling_fn_data_kwargs": cm.configuration["resampling_fn_data_kwargs"],
        "image_reader_writer": pm.plans["image_reader_writer"],
    }


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: dict) -> None:
    _write_atomically(path, lambda p: p.write_text(json.dumps(obj, indent=2)))


@dataclass
class PoolManifest:
    folder: Path
    dataset_name: str
    fingerprint: dict
    cases: dict[str, dict] = field(default_factory=dict)  # case_id -> {"sha256", "sources", "shape", "checks"}
    reference: dict | None = None  # the labelled cases' orientation and intensity figures (pool checks)

    @classmethod
    def open(cls, dataset: PlannedDataset, create: bool) -> "PoolManifest":
        folder = pool_folder(dataset)
        fingerprint = preprocessing_fingerprint(dataset.plans_manager, dataset.configuration_manager)
        path = folder / MANIFEST
        if not path.is_file():
            if not create:
                return cls(folder, dataset.name, fingerprint)
            folder.mkdir(parents=True, exist_ok=True)
            manifest = cls(folder, dataset.name, fingerprint)
            manifest.save()
            return manifest
        stored = json.loads(path.read_text())
        if stored["fingerprint"] != fingerprint:
            changed = sorted(k for k in fingerprint if stored["fingerprint"].get(k) != fingerprint[k])
            raise UserFacingError(f"the pool in {folder} was preprocessed under other plans (differs in: "
                                  f"{', '.join(changed)}); move it away and add the unlabeled scans again")
        return cls(folder, stored["dataset_name"], fingerprint, stored["cases"], stored.get("reference"))

    def save(self) -> None:
        _write_json(self.folder / MANIFEST, {"dataset_name": self.dataset_name, "fingerprint": self.fingerprint,
                                             "reference": self.reference, "cases": self.cases})

    def known_hashes(self) -> set[str]:
        return {c["sha256"] for c in self.cases.values()}

    def data_file(self, case_id: str) -> Path:
        return self.folder / f"{case_id}.b2nd"

    def free_case_id(self, wanted: str, sha256: str) -> str:
        return wanted if wanted not in self.cases else f"{wanted}_{sha256[:8]}"


def labelled_reference(dataset: PlannedDataset) -> dict:
    """The labelled training images' dominant orientation and intensity figures (``pool_checks``),
    read from the raw dataset with the dataset's own reader: what every unlabeled scan is held to."""
    raw = Path(os.environ.get("nnUNet_raw", "")) / dataset.name
    if not os.environ.get("nnUNet_raw") or not raw.is_dir():
        raise UserFacingError(f"the labelled images of {dataset.name} are needed to check unlabeled scans against "
                              f"them, but {raw} does not exist; set nnUNet_raw as for planning")
    cases = get_filenames_of_train_images_and_targets(str(raw), dataset.dataset_json)
    keys = sorted(cases)
    spaced = np.linspace(0, len(keys) - 1, min(len(keys), MAX_REFERENCE_CASES)).astype(int)
    chosen = [keys[i] for i in np.unique(spaced)]
    pm, cm = dataset.plans_manager, dataset.configuration_manager
    figures = []
    for key in tqdm(chosen, desc="measuring labelled cases", unit="case"):
        data, _ = pm.image_reader_writer_class().read_images(cases[key]["images"])
        figures.append(intensity_figures(data, pm, cm))
    return {"orientation": dominant_orientation([cases[k]["images"][0] for k in keys]),
            **LabelledReference.from_figures(figures).to_dict()}


@dataclass(frozen=True)
class _StageJob:
    item: UnlabeledInput
    plans: dict
    configuration: str
    dataset_json: dict
    staging: str
    known_hashes: frozenset
    reference: dict
    window: HUWindow | None
    allow_mismatch: bool


def _stage_case(job: _StageJob) -> tuple[str, str]:
    """Preprocess one case into the staging folder. Returns (status, message); runs in a worker."""
    item = job.item
    conversion = {"window": job.window.to_dict()} if job.window is not None else None
    try:
        sha = item.content_hash(conversion)
    except (UnreadableCaseError, OSError) as e:
        return "error", str(e) if isinstance(e, UnreadableCaseError) else f"{item.source}: {e}"
    if sha in job.known_hashes:
        return "duplicate", f"{item.source}: already in the pool"
    staging = Path(job.staging)
    record_file = staging / f"{sha}.json"
    if record_file.is_file():
        return "staged", sha
    pm = PlansManager(job.plans)
    cm = pm.get_configuration(job.configuration)
    reference_orientation = job.reference["orientation"]
    try:
        data, properties, stored_orientation = read_unlabeled_input(
            item, pm.image_reader_writer_class, job.dataset_json["file_ending"], len(job.dataset_json["channel_names"]),
            reference_orientation)
        cause = None
        if job.window is not None:
            data = job.window.apply(data)
        figures = intensity_figures(data, pm, cm)
        problem = mismatch(figures, LabelledReference.from_dict(job.reference))
        if problem:
            cause = likely_cause(data, pm, job.window)
            if not job.allow_mismatch:
                return "error", f"{item.source}: {problem}; {cause}, or take it anyway with --allow-mismatch"
        preprocessor = cm.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(data, None, properties, pm, cm, job.dataset_json)
    except UnreadableCaseError as e:
        return "error", str(e)
    except Exception as e:  # preprocessing failures are per case, like reading failures
        return "error", f"{item.source}: preprocessing failed ({type(e).__name__}: {e})"
    data = np.ascontiguousarray(data, dtype=np.float32)
    blocks, chunks = comp_blosc2_params(data.shape, tuple(cm.patch_size), data.itemsize)
    _write_atomically(staging / f"{sha}.b2nd", lambda p: blosc2.asarray(
        data, urlpath=str(p), chunks=chunks, blocks=blocks, mode="w",
        cparams={"codec": blosc2.Codec.LZ4HC, "clevel": 5, "nthreads": 1}))
    _write_atomically(staging / f"{sha}.pkl", lambda p: p.write_bytes(pickle.dumps(properties)))
    checks = {"figures": figures, "stored_orientation": stored_orientation,
              "reoriented_to": reference_orientation if stored_orientation not in (None, reference_orientation)
              else None, "window": conversion and conversion["window"],
              "mismatch_allowed": f"{problem}; {cause}" if problem else None}
    _write_json(record_file, {"case_id": item.case_id, "sha256": sha, "sources": [item.source],
                              "shape": list(data.shape), "checks": checks})
    return "staged", sha


def _run_jobs(jobs: list[_StageJob], num_processes: int) -> Iterator[tuple[str, str]]:
    if num_processes <= 1:
        yield from map(_stage_case, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
        yield from pool.imap_unordered(_stage_case, jobs, chunksize=1)


@dataclass
class AddReport:
    pool_folder: Path
    added: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    committed: bool = True
    disk_bytes: int = 0


def add_unlabeled_to_pool(dataset: PlannedDataset, input_folder: Path, num_processes: int = 1,
                          on_error: str = "abort", window: HUWindow | None = None,
                          allow_mismatch: bool = False) -> AddReport:
    """Preprocess every new case under ``input_folder`` into the dataset's pool.

    Each case is first reoriented to the labelled cases' orientation, converted with ``window`` if
    given, and checked against the labelled cases (``pool_checks``); a case unlike them is an error
    unless ``allow_mismatch``.
    ``on_error='abort'``: if any case cannot be read or is refused, nothing of this run enters the
    pool (its good cases stay staged, so fixing the bad file and re-running only does the rest).
    ``on_error='skip'``: the readable cases go in; the others are reported.
    """
    if on_error not in ("abort", "skip"):
        raise ValueError(f"on_error must be 'abort' or 'skip', got {on_error!r}")
    inputs, problems = discover_unlabeled_inputs(Path(input_folder))
    if not inputs and not problems:
        raise UserFacingError(f"no images ({', '.join(IMAGE_FILE_ENDINGS)}) or DICOM series found in {input_folder}")
    manifest = PoolManifest.open(dataset, create=True)
    if manifest.reference is None:
        manifest.reference = labelled_reference(dataset)
        manifest.save()
    staging = manifest.folder / ".staging"
    staging.mkdir(exist_ok=True)
    report = AddReport(manifest.folder, errors=list(problems))
    known = frozenset(manifest.known_hashes())
    jobs = [_StageJob(item, dataset.plans, dataset.configuration, dataset.dataset_json, str(staging), known,
                      manifest.reference, window, allow_mismatch) for item in inputs]
    staged: list[str] = []
    for status, message in tqdm(_run_jobs(jobs, num_processes), total=len(jobs), desc="preprocessing unlabeled",
                                unit="case"):
        {"error": report.errors, "duplicate": report.duplicates, "staged": staged}[status].append(message)
    if report.errors and on_error == "abort":
        report.committed = False
        return report
    _commit_staged(manifest, staging, sorted(set(staged)), report)
    report.disk_bytes = sum(f.stat().st_size for f in manifest.folder.iterdir() if f.is_file())
    return report


def _commit_staged(manifest: PoolManifest, staging: Path, hashes: list[str], report: AddReport) -> None:
    """Move staged cases into the pool, record them in one manifest write, then drop the staging
    records. A run killed in between re-commits from the records left in ``.staging``."""
    known = manifest.known_hashes()
    for sha in hashes:
        record = json.loads((staging / f"{sha}.json").read_text())
        if sha in known:  # the same scan twice in one input folder
            report.duplicates.append(f"{', '.join(record['sources'])}: same content as a case already in the pool")
            continue
        case_id = manifest.free_case_id(record["case_id"], sha)
        for suffix in (".b2nd", ".pkl"):
            # a run killed after this move but before the manifest write left the file moved already
            if (staging / f"{sha}{suffix}").exists() or not (manifest.folder / f"{case_id}{suffix}").exists():
                os.replace(staging / f"{sha}{suffix}", manifest.folder / f"{case_id}{suffix}")
        checks = record.get("checks") or {}  # staged by a version before the pool checks: none
        manifest.cases[case_id] = {**{k: record[k] for k in ("sha256", "sources", "shape")}, "checks": checks}
        if checks.get("mismatch_allowed"):
            report.warnings.append(f"{', '.join(record['sources'])}: taken with --allow-mismatch although "
                                   f"{checks['mismatch_allowed']}")
        known.add(sha)
        report.added.append(case_id)
    if report.added:
        manifest.save()
    for sha in hashes:
        for suffix in (".b2nd", ".pkl", ".json"):
            (staging / f"{sha}{suffix}").unlink(missing_ok=True)
