"""Small helpers for reading the providers' folder layouts."""
from __future__ import annotations

import json
import re
from pathlib import Path

from nnunet_diffusion_pretrain.dataset_conversion.raw_dataset_writer import SourceCase


def strip_ending(name: str, ending: str = ".nii.gz") -> str:
    return name[: -len(ending)] if name.endswith(ending) else name


def paired_cases(images: Path, labels: Path | None, image_suffix: str, label_name, case_id, test: bool = False
                 ) -> list[SourceCase]:
    """One case per image file ``*{image_suffix}`` in ``images``; its label is ``labels / label_name(stem)``
    (a missing label file is reported by the writer, per case)."""
    cases = []
    for image in sorted(images.glob(f"*{image_suffix}")):
        stem = image.name[: -len(image_suffix)]
        label = str(labels / label_name(stem)) if labels is not None else None
        cases.append(SourceCase(case_id(stem), (str(image),), label, test=test))
    return cases


def snake_case(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def labels_from_provider_json(path: Path, fallback: dict[str, int]) -> dict[str, int]:
    """The label map from the provider's own dataset.json ({"0": "background", "1": "spleen", ...}),
    checked against the documented one; the documented map if the file is absent."""
    if not path.is_file():
        return fallback
    provided = json.loads(path.read_text()).get("labels", {})
    labels = {"background" if int(k) == 0 else snake_case(v): int(k) for k, v in sorted(provided.items(),
                                                                                          key=lambda kv: int(kv[0]))}
    return labels or fallback
