"""Fixtures for the baseline tests: images built from git repositories with every violation.

The repositories and the isolated git environment are the artifacts tests' (``make_repo``,
``home``); keys are generated per run with ``cryptography`` so the private key found in a layer is
a real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from artifacts.conftest import _isolated_git, home, make_repo  # noqa: F401 - fixtures

DATA = Path(__file__).parent.parent / "data" / "baseline"

# Shaped like real tokens (issuer prefix, length, alphabet), valid for nobody.
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AWS_KEY_ID = "AKIA" + "Z7QX2MBNV4KD9WTE"


def private_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def read(name: str) -> str:
    return (DATA / name).read_text()


CLEAN_DEFINITION = """\
base: scratch
layers:
  - source: app
    destination: /opt/app
  - source: etc
    destination: /etc
user: "1000:1000"
entrypoint: ["/opt/app/run"]
healthcheck: {test: ["CMD", "/opt/app/run", "--check"], interval: 30s}
"""

VIOLATING_DEFINITION = """\
base: scratch
layers:
  - source: app
    destination: /opt/app
  - source: etc
    destination: /etc
  - source: sbin
    destination: /usr/sbin
  - source: root
    destination: /root
  - source: cache
    destination: /var/cache/apt/archives
  - source: helper
    destination: /usr/local/bin
    mode: "4755"
  - source: shared
    destination: /srv/shared
    mode: "0666"
env: {LOG_LEVEL: debug}
entrypoint: ["/usr/sbin/sshd", "-D"]
"""


def clean_files() -> dict[str, str | bytes | tuple[str | bytes, int]]:
    return {
        "image.yaml": CLEAN_DEFINITION,
        "app/run": ("#!/bin/sh\nexec python3 /opt/app/main.py\n", 0o755),
        "app/main.py": "print('hello')\n",
        "etc/passwd": read("passwd"),
        "etc/nginx/nginx.conf": read("nginx-good.conf"),
        "etc/ssl/openssl.cnf": read("openssl-good.cnf"),
        "etc/app/logging.conf": read("logging-info.conf"),
    }


def violating_files() -> dict[str, str | bytes | tuple[str | bytes, int]]:
    return {
        "image.yaml": VIOLATING_DEFINITION,
        "app/main.py": "print('hello')\n",
        "app/.env": (
            f"DATABASE_PASSWORD=s3cr3t-Pa55\nGITHUB_TOKEN={GITHUB_TOKEN}\nLOG_LEVEL=debug\n"
        ),
        "app/logging.conf": read("logging-debug.conf"),
        "app/settings.py": f"AWS_ACCESS_KEY_ID = '{AWS_KEY_ID}'\n",
        "etc/ssh/sshd_config": read("sshd_config"),
        "etc/nginx/nginx.conf": read("nginx-weak.conf"),
        "etc/apache2/mods-enabled/ssl.conf": read("apache-ssl-weak.conf"),
        "sbin/sshd": ("#!/bin/sh\necho not really sshd\n", 0o755),
        "root/.ssh/authorized_keys": read("authorized_keys"),
        "root/.cache/pip/http/wheel.bin": "cached wheel\n",
        "cache/python3_3.11.2-1_amd64.deb": "not really a deb\n",
        "helper/helper": ("#!/bin/sh\nid\n", 0o755),
        "shared/notes.txt": "anyone can write\n",
    }


@pytest.fixture
def clean_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "clean", clean_files())


@pytest.fixture
def violating_repo(tmp_path: Path) -> Iterator[Path]:
    files = violating_files()
    files["app/id_ecdsa"] = private_key_pem()
    yield make_repo(tmp_path / "violating", files)
