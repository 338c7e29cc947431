"""robustfer: pose- and occlusion-robust facial expression recognition.

>>> from robustfer import Recognizer
>>> faces = Recognizer.from_pretrained("default").predict("photo.jpg")
"""

from __future__ import annotations

from typing import Any

from robustfer._version import __version__

__all__ = ["FaceResult", "Recognizer", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import robustfer` stays cheap (no torch/OpenCV until needed).
    if name in ("Recognizer", "FaceResult"):
        from robustfer.inference import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'robustfer' has no attribute {name!r}")
