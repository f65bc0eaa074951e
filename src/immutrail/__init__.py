"""immutrail: the verifiable audit trail for immutable infrastructure."""

__version__ = "0.1.0"
