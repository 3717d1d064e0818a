"""The package is laid out by stage, as docs/design.md draws it: every module imports only from
its own layer and the layers before it, and every module is in the design's table."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "nnunet_diffusion_pretrain"
LAYERS = ("base", "pool", "dataset_conversion", "diffusion", "transfer", "evaluation", "training", "cli")
SUBPACKAGES = {"pool", "diffusion", "transfer", "evaluation", "training", "cli"}
INSTALLED = {"dataset_conversion": REPO / "dataset_conversion"}  # installed under the package's name


def layer_of_module(name: str) -> str:
    """``nnunet_diffusion_pretrain.pool.hu_window`` -> ``pool``; top-level modules are ``base``."""
    parts = name.split(".")
    if len(parts) > 1 and (parts[1] in SUBPACKAGES or parts[1] in INSTALLED):
        return parts[1]
    return "base"


def modules() -> list[tuple[Path, str]]:
    files = [(p, layer_of_module("nnunet_diffusion_pretrain." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)))
             for p in PACKAGE.rglob("*.py")]
    files += [(p, layer) for layer, folder in INSTALLED.items() for p in folder.rglob("*.py")]
    return files


def test_no_module_imports_from_a_later_layer():
    upward = []
    for path, layer in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.startswith("nnunet_diffusion_pretrain.") and \
                        LAYERS.index(layer_of_module(name)) > LAYERS.index(layer):
                    upward.append(f"{path.relative_to(REPO)} ({layer}) imports {name}")
    assert not upward, "\n".join(upward)


def test_every_module_is_in_the_design_table():
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    missing = []
    for path, layer in modules():
        relative = path.relative_to(REPO).as_posix()
        folder = path.parent.relative_to(REPO).as_posix() + "/"
        if path.name == "__init__.py":
            continue
        # the benchmark's, the commands' and the converters' modules are listed in their folder's row
        listed = f"`{relative}`" in design or (folder in design and f"`{path.name}`" in design) or \
            folder in ("nnunet_diffusion_pretrain/cli/", "dataset_conversion/") and f"`{folder}`" in design
        if not listed or f"| {layer} |" not in design:
            missing.append(relative)
    assert not missing, f"not in docs/design.md's table: {missing}"
