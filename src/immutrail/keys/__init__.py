"""Principals' signing keys: generated here, kept encrypted, announced and revoked in the ledger.

``keystore`` is the API (generate, list, export, revoke, load for signing); ``names`` the grammar
of principal ids and purposes; ``passphrase`` where secrets come from. Signing itself (images,
approvals) lives in :mod:`immutrail.signing`.
"""

from __future__ import annotations
