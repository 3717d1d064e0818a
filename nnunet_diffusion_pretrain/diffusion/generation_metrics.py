"""FID, sFID, precision, recall and their F1 from feature vectors, with torch-fidelity's
implementations (the definitions of the guided-diffusion evaluation suite: Fréchet distance of
Gaussian fits; precision/recall by k-nearest-neighbour manifolds, Kynkäänniemi et al. 2019, k=3).
sFID is the Fréchet distance of spatial features (see feature_networks)."""
from __future__ import annotations

import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    stats = [fid_features_to_statistics(f.double().cpu()) for f in (real, fake)]
    return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, neighbourhood: int = 3) -> dict[str, float]:
    """Precision (fake samples inside the real manifold), recall (real inside the fake manifold), F1."""
    out = prc_features_to_metric(fake.float().cpu(), real.float().cpu(), prc_neighborhood=neighbourhood,
                                 prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    return {"precision": out["precision"], "recall": out["recall"], "f1": out["f_score"]}


def quality_metrics(real: dict[str, torch.Tensor], fake: dict[str, torch.Tensor], neighbourhood: int = 3
                    ) -> dict[str, float]:
    """All metrics from {"pooled": (N, D), "spatial": (N, S)} feature sets of real and fake images."""
    return {"fid": frechet_distance(real["pooled"], fake["pooled"]),
            "sfid": frechet_distance(real["spatial"], fake["spatial"]),
            **precision_recall(real["pooled"], fake["pooled"], neighbourhood)}
