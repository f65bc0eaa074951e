"""Drift: is what runs still exactly the approved image?

This package holds the filesystem integrity core: :func:`expected_files` (what the image says
the filesystem is), :func:`check_root` (a local instance's unpacked root against it) and
:func:`check_container` (a Docker container against it), each giving an
:class:`IntegrityReport` of findings. docs/drift.md explains the rules and the formats.
"""

from __future__ import annotations

from .compare import Profile
from .container import check_container
from .errors import DriftError, DriftInputError, EngineError, ImageVerificationError, SealError
from .expected import ExpectedEntry, ExpectedTree, Kind, drift_key, expected_files
from .findings import Change, Difference, Finding, IntegrityReport
from .integrity import RecheckPolicy, check_root

__all__ = [
    "Change",
    "Difference",
    "DriftError",
    "DriftInputError",
    "EngineError",
    "ExpectedEntry",
    "ExpectedTree",
    "Finding",
    "ImageVerificationError",
    "IntegrityReport",
    "Kind",
    "Profile",
    "RecheckPolicy",
    "SealError",
    "check_container",
    "check_root",
    "drift_key",
    "expected_files",
]
