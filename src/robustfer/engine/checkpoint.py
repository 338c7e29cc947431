"""The resumable training state (``last.pt``), written atomically.

Model, optimiser, LR-scheduler, training-task (e.g. the step count that drives PhaNet's
alternating schedule) and RNG states, epoch, best score and history (and, after a mid-epoch
save, the interrupted epoch's running sums), written after every epoch (and every
``train.checkpoint_minutes`` within one), so a killed run resumes without losing finished
work. No gradient scaler is saved: mixed precision is bf16, which needs none. Model
checkpoints (``best.safetensors``) are in :mod:`robustfer.runtime.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustfer.runtime.checkpoint import atomic_write, load_training_state

__all__ = ["load_training_state", "save_training_state"]


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write the resumable training state atomically."""
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))
