"""Exceptions raised on bad user input.

Every message says what was wrong (file, key or value), what was expected, and what to do.
The CLI prints them on one line without a traceback.
"""

from __future__ import annotations


class RobustferError(Exception):
    """Base class of every error robustfer raises on purpose."""


class DatasetError(RobustferError, ValueError):
    """A dataset root, layout, label file or image is missing or malformed."""


class ConfigError(RobustferError, ValueError):
    """A config key is unknown, a value has the wrong type, or options conflict."""


class ModelError(RobustferError, ValueError):
    """An unknown model name or an invalid model option."""


class CheckpointError(RobustferError, ValueError):
    """A checkpoint is missing, truncated or not a robustfer checkpoint."""


class MetricsError(RobustferError, ValueError):
    """Predictions, targets or class names that metrics cannot be computed from."""


class ImageError(RobustferError, ValueError):
    """An input image or video cannot be read, or is outside the supported limits."""
