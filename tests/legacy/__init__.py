"""Frozen copies of earlier parsers (see tests/test_branches.py)."""
