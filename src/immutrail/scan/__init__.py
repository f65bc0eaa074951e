"""The vulnerability database (OSV) and the scanner; see docs/scanning.md."""
