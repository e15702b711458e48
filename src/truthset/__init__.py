"""Truthset: auditable ground truth for medical AI."""

__version__ = "0.1.0"
