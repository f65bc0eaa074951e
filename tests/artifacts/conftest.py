"""Fixtures for the artifacts tests: git repositories built from a dict, an initialised home.

Git runs with no global or system configuration and fixed identities and dates, so a test's
repository is the same on every machine; ``SOURCE_DATE_EPOCH`` is unset unless a test sets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from immutrail.ledger.home import init_ledger

DATA = Path(__file__).parent.parent / "data" / "artifacts"
COMMIT_DATE = "2025-01-02T03:04:05+00:00"
COMMIT_EPOCH = 1735787045

Files = Mapping[str, str | bytes | tuple[str | bytes, int]]
"""path -> content, or (content, mode); a content starting with '-> ' makes a symlink."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def need_tool(name: str) -> str:
    """The tool's path; skip without it, except under CI=true where it must be installed."""
    path = shutil.which(name)
    if path:
        return path
    if in_ci():
        pytest.fail(f"{name} is not installed and CI=true (apt-get install {name})", pytrace=False)
    pytest.skip(f"{name} is not installed (apt-get install {name})")


def isolate(
    patch: pytest.MonkeyPatch,
    root: Path,
    *,
    date: str | None = COMMIT_DATE,
    actor: str | None = "user:test",
) -> None:
    """git without the user's or the system's config, with a fixed identity (and commit date);
    no immutrail setting inherited from the shell; ``actor`` the setup-mode actor (None: none)."""
    patch.setenv("GIT_CONFIG_GLOBAL", str(root / "no-gitconfig"))
    patch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for who in ("AUTHOR", "COMMITTER"):
        patch.setenv(f"GIT_{who}_NAME", "Test")
        patch.setenv(f"GIT_{who}_EMAIL", "test@example.org")
        if date is not None:
            patch.setenv(f"GIT_{who}_DATE", date)
    patch.delenv("SOURCE_DATE_EPOCH", raising=False)
    for name in ("HOME", "DB", "TOKEN", "PRINCIPAL", "ACTOR"):
        patch.delenv(f"IMMUTRAIL_{name}", raising=False)
    if actor is not None:
        patch.setenv("IMMUTRAIL_ACTOR", actor)


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def write_files(root: Path, files: Files) -> None:
    for name, spec in files.items():
        content, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        if isinstance(content, str) and content.startswith("-> "):
            path.symlink_to(content[3:])
            continue
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(mode)


def make_repo(root: Path, files: Files, message: str = "initial") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    write_files(root, files)
    commit_all(root, message)
    return root


def commit_all(root: Path, message: str = "change") -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD")


DEFINITION = """\
base: scratch
layers:
  - source: app
    destination: /opt/app
    exclude: ["*.pyc"]
  - source: config/app.toml
    destination: /etc/app/app.toml
    mode: "0640"
    owner: "1000:1000"
env: {APP_HOME: /opt/app}
entrypoint: ["/opt/app/bin/run"]
ports: ["8080"]
"""

APP_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "image.yaml": DEFINITION,
    "app/main.py": "print('hello')\n",
    "app/bin/run": ("#!/bin/sh\nexec python3 /opt/app/main.py\n", 0o755),
    "app/bin/main": "-> ../main.py",
    "app/lib/util.py": "X = 1\n",
    "app/cache.pyc": b"\x00compiled",
    "config/app.toml": "port = 8080\n",
    "README.md": "# demo\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", APP_FILES)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    ledger, _ = init_ledger(path)
    ledger.close()
    yield path


def set_compression(repo: Path, compression: str) -> None:
    """Make ``image.yaml`` of an APP_FILES repository use ``compression`` and commit it."""
    if compression != "gzip":  # gzip is the default: the definition stays as it is
        write_files(repo, {"image.yaml": f"{DEFINITION}compression: {compression}\n"})
        commit_all(repo, f"compression: {compression}")


PLAIN_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    **APP_FILES,
    # the same image with uncompressed layers, from the same commit
    "plain.yaml": DEFINITION + "compression: none\n",
    # a package, so that the SBOM has a component to compare
    "app/lib/demo-1.2.dist-info/METADATA": (
        "Metadata-Version: 2.1\nName: demo\nVersion: 1.2\nLicense-Expression: MIT\n"
    ),
}


@pytest.fixture
def plain_repo(tmp_path: Path) -> Path:
    """APP_FILES with ``plain.yaml``: ``image.yaml`` with ``compression: none``."""
    return make_repo(tmp_path / "plain-repo", PLAIN_FILES)
