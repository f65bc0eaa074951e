"""Shared vectors for the crypto tests: paths, and the real keys that verify them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

DATA = Path(__file__).resolve().parent.parent / "data" / "crypto"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def rekor_log() -> dict[str, object]:
    """The public-good Rekor entry of the production Sigstore trusted root."""
    root = json.loads((DATA / "trustedroot.v1.json").read_text(encoding="utf-8"))
    (log,) = [t for t in root["tlogs"] if t["baseUrl"] == "https://rekor.sigstore.dev"]
    assert isinstance(log, dict)
    return log


@pytest.fixture(scope="session")
def rekor_public_key(rekor_log: dict[str, object]) -> ec.EllipticCurvePublicKey:
    public = rekor_log["publicKey"]
    assert isinstance(public, dict)
    key = load_der_public_key(base64.b64decode(public["rawBytes"]))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key
