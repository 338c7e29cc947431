"""Training phases, and the schedule of phases a model asks the training engine to follow.

Some methods do not train every parameter on the whole loss at every step: PhaNet (after
RA-CNN) alternates blocks of steps that train its classifiers with steps that train only its
attention-proposal networks. Such a model exposes ``training_schedule() ->
TrainingSchedule``; the engine (:mod:`robustfer.engine.train`) counts the optimiser steps,
asks the schedule for the phase of each one, passes it to the model's forward
(``model(x, phase=Phase.RANK)``), and saves the step count with the training state, so a
resumed run continues the schedule exactly. The model hands the phase on to its loss in
``output.phase``. A model called without a phase (evaluation, ``robustfer
explain``, export) runs in :attr:`Phase.EVAL` in eval mode and :attr:`Phase.JOINT` in training
mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from robustfer.errors import ModelError


class Phase(Enum):
    """What one forward pass (and the loss of its output) trains."""

    JOINT = "joint"  #: every parameter, on the whole loss
    CLASSIFY = "classify"  #: the classifiers; the attention squares are fixed
    RANK = "rank"  #: the attention-proposal networks alone, on the ranking loss
    EVAL = "eval"  #: no training (eval mode): the whole loss, for reporting


@dataclass(frozen=True)
class TrainingSchedule:
    """A cycle of training phases: ``blocks`` = ((phase, steps), ...), repeated forever.

    ``TrainingSchedule(((Phase.CLASSIFY, 4), (Phase.RANK, 1)))`` gives four classify steps,
    one rank step, four classify steps, ... (steps counted from 0).
    """

    blocks: tuple[tuple[Phase, int], ...]

    def __post_init__(self) -> None:
        if not self.blocks or any(not isinstance(p, Phase) or int(n) < 1 for p, n in self.blocks):
            raise ModelError(f"a training schedule needs (Phase, steps >= 1) blocks, got {self.blocks!r}.")

    @property
    def period(self) -> int:
        """Steps in one cycle."""
        return sum(int(n) for _, n in self.blocks)

    def phase_at(self, step: int) -> Phase:
        """The phase of training step ``step`` (0-based, counted over the whole run)."""
        r = step % self.period
        for phase, n in self.blocks:
            if r < n:
                return phase
            r -= int(n)
        raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["Phase", "TrainingSchedule"]
