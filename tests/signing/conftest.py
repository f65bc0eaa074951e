from tests.artifacts.conftest import _isolated_git, home, repo  # noqa: F401
