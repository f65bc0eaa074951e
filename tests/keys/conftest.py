from tests.artifacts.conftest import _isolated_git, home  # noqa: F401
