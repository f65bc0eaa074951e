"""The per-service lock file is named from checked names: a service name is never a path."""

from __future__ import annotations

from pathlib import Path

import pytest

from immutrail.deploy.engine import service_lock
from immutrail.deploy.errors import DeployInputError


@pytest.mark.parametrize("service", ["x/../../../../outside", "", "a\nb", "a" * 300])
def test_a_bad_service_name_takes_no_lock_and_creates_nothing(tmp_path: Path, service: str) -> None:
    home = tmp_path / "home"
    (home / "runtime" / "locks" / "prod.x").mkdir(parents=True)  # what made ../ resolve before
    with pytest.raises(DeployInputError), service_lock(home, "prod", service):
        pass
    assert sorted(p.name for p in (home / "runtime" / "locks").iterdir()) == ["prod.x"]
    assert not (tmp_path / "outside.lock").exists()


def test_a_good_name_locks_its_own_file(tmp_path: Path) -> None:
    with service_lock(tmp_path, "prod", "hello"):
        assert (tmp_path / "runtime" / "locks" / "prod.hello.lock").is_file()
