"""Reliability harness (see run.py)."""
