"""Low-label folds appended to nnU-Net's ``splits_final.json``, with a manifest saying which is which.

Every budget shares one held-out validation set, so results across budgets are comparable. For
repeat ``r`` the labelled cases are the first ``k`` of one permutation of the remaining cases,
rotated to start at ``repeat_start(r, n)``: budgets are nested within a repeat (1 case is a subset
of 2 cases), repeats start from different cases, and repeat ``r`` uses the same cases whatever
``--repeats`` is, so adding repeats later keeps the earlier ones. The same arguments always give
the same folds; existing folds are never changed (a request that would change one is refused) and
re-running appends nothing twice.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_diffusion_pretrain.errors import UserFacingError

MANIFEST_NAME = "lowlabel_splits.json"
# the remedy when a request would change what an earlier run was trained on
KEEP_EARLIER_REPEATS = ("Existing folds are never changed (version 0.1.x chose cases per repeat from --repeats): keep "
                        "the old --repeats, or start a new dataset/work folder")


@dataclass(frozen=True)
class LowLabelFold:
    fold: int
    kind: str  # "cases", "fraction" or "slices"
    budget: float  # number of cases, fraction of the training pool, or number of slices
    repeat: int
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    dataset: str  # the dataset whose splits_final.json holds this fold


def choose_held_out(case_ids: list[str], num_val: int, seed: int) -> list[str]:
    if not 1 <= num_val < len(case_ids):
        raise UserFacingError(f"cannot hold out {num_val} of {len(case_ids)} cases: at least one must stay "
                              f"for training")
    order = np.random.default_rng(seed).permutation(sorted(case_ids))
    return sorted(order[:num_val].tolist())


def cross_validation_held_out(case_ids: list[str], num_folds: int, fold: int, seed: int) -> list[str]:
    """Fold ``fold``'s held-out cases: the ``num_folds`` groups split one seeded permutation into
    disjoint, near-equal parts, so over all folds every case is held out exactly once."""
    if not 2 <= num_folds <= len(case_ids) or not 0 <= fold < num_folds:
        raise UserFacingError(f"cannot make fold {fold} of {num_folds} cross-validation folds from {len(case_ids)} "
                              f"cases: 2 <= folds <= cases and 0 <= fold < folds")
    order = np.random.default_rng(seed).permutation(sorted(case_ids))
    return sorted(np.array_split(order, num_folds)[fold].tolist())


def van_der_corput(index: int, base: int) -> Fraction:
    """The ``index``-th point of the van der Corput sequence in [0, 1): 0, 1/b, 2/b, ..., 1/b^2, ...
    Each new point falls in the largest gap left by the earlier ones, and no point depends on how
    many are drawn, which is what lets repeats be added later without moving earlier ones."""
    numerator, denominator = 0, 1
    while index:
        index, digit = divmod(index, base)
        numerator, denominator = numerator * base + digit, denominator * base
    return Fraction(numerator, denominator)


def repeat_start(repeat: int, pool_size: int) -> int:
    """Where repeat ``repeat`` starts in the permuted pool: thirds first (0, n/3, 2n/3), then the
    ninths between them, and so on, skipping positions already taken. Repeats 0-2 get disjoint
    blocks of n/3 cases and the first ``n`` repeats start at different cases."""
    taken: list[int] = []
    index = 0
    while len(taken) <= repeat % pool_size:
        start = math.floor(pool_size * van_der_corput(index, 3))
        if start not in taken:
            taken.append(start)
        index += 1
    return taken[repeat % pool_size]


def labelled_cases_per_repeat(train_pool: list[str], repeats: int, seed: int) -> list[list[str]]:
    """For each repeat, an ordering of the training pool; a budget of k takes its first k."""
    base = np.random.default_rng(seed + 1).permutation(sorted(train_pool)).tolist()
    starts = [repeat_start(r, len(base)) for r in range(repeats)]
    return [base[start:] + base[:start] for start in starts]


def budgets_to_counts(num_labeled: list[int], fractions: list[float], pool_size: int) -> list[tuple[str, float, int]]:
    """(kind, budget as given, number of labelled cases) for every requested budget."""
    out = [("cases", float(k), int(k)) for k in num_labeled]
    out += [("fraction", f, max(1, round(f * pool_size))) for f in fractions]
    for kind, budget, k in out:
        if k > pool_size:
            raise UserFacingError(f"asked for {k} labelled cases but only {pool_size} training cases exist outside "
                                  f"the held-out set; use at most {pool_size}")
        if k < 1 or (kind == "fraction" and not 0 < budget <= 1):
            raise UserFacingError(f"invalid budget {budget} ({kind})")
    return out


def load_splits(preprocessed: Path, case_ids: list[str]) -> list[dict]:
    """The dataset's splits, creating nnU-Net's default 5-fold split first if there is none (so
    folds 0-4 stay what nnU-Net would have made)."""
    path = preprocessed / "splits_final.json"
    if path.is_file():
        return json.loads(path.read_text())
    return generate_crossval_split(sorted(case_ids), seed=12345, n_splits=5) if len(case_ids) >= 5 else []


def append_fold(splits: list[dict], train: list[str], val: list[str]) -> int:
    """Index of an identical fold if there is one, else of the fold appended."""
    for i, s in enumerate(splits):
        if sorted(s["train"]) == sorted(train) and sorted(s["val"]) == sorted(val):
            return i
    splits.append({"train": sorted(train), "val": sorted(val)})
    return len(splits) - 1


def read_manifest(preprocessed: Path) -> dict:
    path = preprocessed / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else {"held_out": None, "folds": []}


def write_json_atomically(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _fold_key(fold: dict) -> tuple[str, float, int]:
    return fold["kind"], fold["budget"], fold["repeat"]


def check_folds_unchanged(preprocessed: Path, folds: list[LowLabelFold]) -> None:
    """Refuse to relabel a (budget, repeat) the manifest already records with other cases: runs
    named after that repeat would otherwise be reported under cases they were not trained on."""
    known = {_fold_key(f): f["train"] for f in read_manifest(preprocessed)["folds"]}
    for f in folds:
        before = known.get(_fold_key(asdict(f)))
        if before is not None and sorted(before) != sorted(f.train):
            raise UserFacingError(f"{preprocessed / MANIFEST_NAME} already gives repeat {f.repeat} of budget "
                                  f"{f.budget:g} ({f.kind}) the labelled cases {sorted(before)}; these arguments "
                                  f"would give it {sorted(f.train)}. {KEEP_EARLIER_REPEATS}")


def record_folds(preprocessed: Path, splits: list[dict], held_out: list[str], folds: list[LowLabelFold]) -> None:
    """Write splits_final.json and merge the folds into the manifest, one entry per (kind, budget,
    repeat); two budgets may name the same fold (e.g. 10% of 20 cases and 2 cases)."""
    check_folds_unchanged(preprocessed, folds)
    manifest = read_manifest(preprocessed)
    manifest["held_out"] = held_out
    known = {_fold_key(f): f for f in manifest["folds"]}
    for f in folds:
        entry = {**asdict(f), "train": list(f.train), "val": list(f.val)}
        known[_fold_key(entry)] = entry
    manifest["folds"] = sorted(known.values(), key=lambda f: (f["fold"], f["kind"], f["budget"], f["repeat"]))
    write_json_atomically(preprocessed / "splits_final.json", splits)
    write_json_atomically(preprocessed / MANIFEST_NAME, manifest)


def check_held_out_unchanged(preprocessed: Path, held_out: list[str]) -> None:
    previous = read_manifest(preprocessed)["held_out"]
    if previous is not None and sorted(previous) != sorted(held_out):
        raise UserFacingError(f"{preprocessed / MANIFEST_NAME} already uses the held-out cases {previous}; "
                              f"these arguments would hold out {held_out}. Use the same --seed and --num-val "
                              f"(or --val-fraction) so all budgets stay comparable")


def num_held_out(num_val: int | None, val_fraction: float, num_cases: int) -> int:
    return num_val if num_val is not None else max(1, math.floor(val_fraction * num_cases))


def fold_cases(preprocessed: Path, fold: int) -> tuple[list[str], list[str]]:
    """(training cases, validation cases) of one fold of the dataset's splits_final.json."""
    splits = json.loads((preprocessed / "splits_final.json").read_text()) \
        if (preprocessed / "splits_final.json").is_file() else []
    if not 0 <= fold < len(splits):
        raise UserFacingError(f"{preprocessed / 'splits_final.json'} has no fold {fold}; make it with "
                              f"nnUNetv2_make_lowlabel_splits")
    return sorted(splits[fold]["train"]), sorted(splits[fold]["val"])
