"""``nnUNetv2_make_lowlabel_splits``: append low-label folds to a dataset's splits_final.json.

Examples:
  nnUNetv2_make_lowlabel_splits -d 501 --num-labeled 1 2 4 --repeats 3 --seed 0
  nnUNetv2_make_lowlabel_splits -d 501 --fraction 0.01 0.1 --repeats 3
  nnUNetv2_make_lowlabel_splits -d 501 --num-labeled-slices 4 16 --slice-dataset-id 601 --repeats 3

All folds share one held-out validation set (--num-val or --val-fraction, drawn with --seed; or
--cv-fold K k: group k of K disjoint groups, so that K calls hold out every case once). Folds
0-4 and any other existing folds are kept; new ones are appended, printed and written to
lowlabel_splits.json next to splits_final.json. Train with ``nnUNetv2_train 501 2d FOLD ...``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import (LowLabelFold, append_fold, budgets_to_counts,
                                                       check_held_out_unchanged, choose_held_out,
                                                       cross_validation_held_out,
                                                       labelled_cases_per_repeat, load_splits, num_held_out,
                                                       record_folds, MANIFEST_NAME)
from nnunet_diffusion_pretrain.planned_dataset import load_planned_dataset
from nnunet_diffusion_pretrain.transfer.sparse_slice_dataset import write_sparse_slice_dataset


def _case_ids(preprocessed: Path, file_ending: str) -> list[str]:
    gt = preprocessed / "gt_segmentations"
    if not gt.is_dir():
        raise UserFacingError(f"{gt} is missing; run nnUNetv2_plan_and_preprocess for this dataset first")
    return sorted(p.name[: -len(file_ending)] for p in gt.iterdir() if p.name.endswith(file_ending))


def _print_table(folds: list[LowLabelFold]) -> None:
    print(f"{'fold':>5}  {'dataset':<32} {'kind':<8} {'budget':>7} {'repeat':>6}  labelled")
    for f in folds:
        budget = f"{f.budget:g}"
        print(f"{f.fold:>5}  {f.dataset:<32} {f.kind:<8} {budget:>7} {f.repeat:>6}  {', '.join(f.train)}")


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True, help="dataset name or ID (planned and preprocessed)")
    parser.add_argument("--num-labeled", type=int, nargs="*", default=[], help="numbers of labelled cases")
    parser.add_argument("--fraction", type=float, nargs="*", default=[],
                        help="fractions of the training cases (held-out set excluded), at least one case")
    parser.add_argument("--all-labeled", action="store_true",
                        help="also a fold with every training case (the upper bound, and the fold to pretrain on "
                             "so the held-out images stay unseen)")
    parser.add_argument("--num-labeled-slices", type=int, nargs="*", default=[],
                        help="2D slice budgets: labelled slices in one training volume per repeat")
    parser.add_argument("--slice-dataset-id", type=int, default=None,
                        help="dataset ID for the derived sparse-label dataset (needed with --num-labeled-slices)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per budget (different labelled cases)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-val", type=int, default=None, help="number of held-out validation cases")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="held-out fraction if --num-val is not given; default 0.2")
    parser.add_argument("--cv-fold", type=int, nargs=2, metavar=("K", "k"), default=None,
                        help="hold out group k (0-based) of K disjoint groups of one --seed permutation instead of "
                             "--num-val/--val-fraction (cross-validation: each case is held out in exactly one k)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier; default nnUNetPlans")
    parser.add_argument("-c", default="2d",
                        help="2D configuration to preprocess the slice dataset with (one that inherits from 2d "
                             "works too); default 2d")
    parser.add_argument("-np", type=int, default=2, help="processes for preprocessing the slice dataset")
    args = parser.parse_args()
    if not (args.num_labeled or args.fraction or args.num_labeled_slices or args.all_labeled):
        parser.error("give at least one of --num-labeled, --fraction, --all-labeled, --num-labeled-slices")
    if args.num_labeled_slices and args.slice_dataset_id is None:
        parser.error("--num-labeled-slices needs --slice-dataset-id (the ID of the derived dataset)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.cv_fold and args.num_val is not None:
        parser.error("give --cv-fold or --num-val, not both")

    # slice budgets are 2D; case budgets work for every configuration of the plans
    dataset = load_planned_dataset(args.d, args.c if args.num_labeled_slices else None, args.p)
    if args.num_labeled_slices and len(dataset.configuration_manager.patch_size) != 2:
        parser.error(f"--num-labeled-slices needs a 2D configuration; {args.c} is 3D")
    cases = _case_ids(dataset.preprocessed_folder, dataset.dataset_json["file_ending"])
    held_out = cross_validation_held_out(cases, *args.cv_fold, args.seed) if args.cv_fold else \
        choose_held_out(cases, num_held_out(args.num_val, args.val_fraction, len(cases)), args.seed)
    check_held_out_unchanged(dataset.preprocessed_folder, held_out)
    pool = [c for c in cases if c not in held_out]
    orders = labelled_cases_per_repeat(pool, args.repeats, args.seed)

    splits = load_splits(dataset.preprocessed_folder, cases)
    folds = []
    if args.all_labeled:
        fold = append_fold(splits, pool, held_out)
        folds.append(LowLabelFold(fold, "all", float(len(pool)), 0, args.seed, tuple(sorted(pool)), tuple(held_out),
                                  dataset.name))
    for kind, budget, k in budgets_to_counts(args.num_labeled, args.fraction, len(pool)):
        for repeat, order in enumerate(orders):
            train = sorted(order[:k])
            fold = append_fold(splits, train, held_out)
            folds.append(LowLabelFold(fold, kind, budget, repeat, args.seed, tuple(train), tuple(held_out),
                                      dataset.name))
    if folds:
        record_folds(dataset.preprocessed_folder, splits, held_out, folds)
        _print_table(folds)
        print(f"written: {dataset.preprocessed_folder / 'splits_final.json'} and {MANIFEST_NAME}")

    if args.num_labeled_slices:
        derived_name, chosen = write_sparse_slice_dataset(dataset, args.slice_dataset_id, held_out,
                                                          [order[0] for order in orders], args.num_labeled_slices,
                                                          args.p, args.np, args.c)
        derived = load_planned_dataset(args.slice_dataset_id, args.c, args.p)
        derived_cases = _case_ids(derived.preprocessed_folder, derived.dataset_json["file_ending"])
        derived_splits = load_splits(derived.preprocessed_folder, [])  # no default folds: they would mix budgets
        slice_folds = []
        for count, repeat, case, slices in chosen:
            assert case in derived_cases, case
            fold = append_fold(derived_splits, [case], held_out)
            slice_folds.append(LowLabelFold(fold, "slices", float(count), repeat, args.seed, (case,),
                                            tuple(held_out), derived_name))
            print(f"  {case}: labelled slices {slices}")
        record_folds(derived.preprocessed_folder, derived_splits, held_out, slice_folds)
        _print_table(slice_folds)
        print(f"written: {derived.preprocessed_folder / 'splits_final.json'} and {MANIFEST_NAME}; "
              f"train with nnUNetv2_train {args.slice_dataset_id} {args.c} FOLD ...")
    return 0

