"""Plans whose 2D slices are axial, made by nnU-Net's own planner.

nnU-Net slices 2D data across the axis with the coarsest spacing. Some public preprocessed sets
carry a nominal header spacing (e.g. the 6-volume BTCV subset says 1.0 mm between slices and
1.75 mm in-plane) that would make nnU-Net slice them sagittally. The paper, and every slice budget
("4 labelled slices"), means axial slices, so the benchmark plans with the planner's own
``suppress_transpose`` option (array axis 0 = the image's z for SimpleITK-read volumes) under a
separate plans name; the dataset's stock ``nnUNetPlans`` stay untouched.
"""
from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

AXIAL_PLANS = "nnUNetPlansAxial"


def plan_axial(dataset_id: int, plans_name: str = AXIAL_PLANS) -> None:
    """Write ``plans_name``.json for a fingerprinted dataset (no preprocessing)."""
    ExperimentPlanner(dataset_id, plans_name=plans_name, suppress_transpose=True).plan_experiment()
