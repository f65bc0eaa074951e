"""Signatures and approvals of images, and verification of everything attached to an image.

``sign`` (release signatures) and ``approve`` (per-environment approvals) write signed in-toto
statements with principals' keys; ``verify`` checks an image's blobs and every statement and
Sigstore bundle attached to it; ``sigstore_bundles`` verifies Sigstore bundles offline against the
trusted root shipped in ``data/trusted_root.json``. Import the submodules you need: this package
imports nothing itself, so :mod:`immutrail.artifacts` can use ``sigstore_bundles`` without a cycle.
"""

from __future__ import annotations
