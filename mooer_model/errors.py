"""Errors shared by the model modules (kept apart so low-level modules need not import
the release layout to raise them)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file or key is missing, unreadable or does not fit the model; the message
    names the file or key and says what was expected and what was found."""
