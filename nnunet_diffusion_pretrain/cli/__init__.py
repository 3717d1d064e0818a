"""Console commands (see ``[project.scripts]`` in pyproject.toml)."""
