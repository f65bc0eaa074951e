"""Artifacts: reproducible OCI images from git, stored by content, recorded in the ledger.

The public surface is small: :func:`immutrail.artifacts.builder.build`,
:class:`immutrail.artifacts.store.Store`, :func:`immutrail.artifacts.definition.load_definition`
and the errors in :mod:`immutrail.artifacts.errors`. Everything else is an implementation detail.
"""
