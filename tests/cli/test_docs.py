"""The README and docs/ stay true: links and repository paths exist, named commands answer --help,
and the README stays a front page."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import REPO, run
from nnunet_diffusion_pretrain.subprocess_steps import console_script

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"^(?:benchmarks|docs|nnunet_diffusion_pretrain|tests|trainers|dataset_conversion|\.ci)/"
                       r"[A-Za-z0-9_./-]*$")
COMMAND = re.compile(r"\bnnUNetv2_[A-Za-z0-9_]+")
MAX_README_LINES = 300


def test_every_relative_link_and_repository_path_exists():
    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            path = target.split("#", 1)[0]
            if path and not re.match(r"^[a-z]+://|^mailto:", path) and not (page.parent / path).exists():
                missing.append(f"{page.relative_to(REPO)}: link {target}")
        for code in CODE.findall(text):
            for token in code.split():
                token = token.rstrip(".,;:)")
                if REPO_PATH.match(token) and not (REPO / token).exists():
                    missing.append(f"{page.relative_to(REPO)}: path {token}")
    assert not missing, "\n".join(missing)


def test_every_named_command_answers_help(nnunet_env):
    names = sorted({name for page in PAGES for name in COMMAND.findall(page.read_text(encoding="utf-8"))})
    assert "nnUNetv2_diffusion_add_unlabeled" in names and "nnUNetv2_train" in names

    def answers(name: str) -> str | None:
        result = run([console_script(name), "--help"], nnunet_env, check=False, timeout=300)
        return None if result.returncode == 0 else f"{name} --help: exit {result.returncode}\n{result.stderr[-500:]}"

    with ThreadPoolExecutor(2) as pool:
        failures = [f for f in pool.map(answers, names) if f]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("page", [REPO / "README.md"], ids=["README.md"])
def test_readme_stays_a_front_page(page):
    lines = len(page.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; details belong in docs/"
