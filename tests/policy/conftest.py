"""Fixtures of the gate tests: the artifacts tests' git repositories and homes."""

from artifacts.conftest import _isolated_git, home, repo  # noqa: F401
