"""Canonical expression labels: the one order used everywhere in robustfer.

The canonical order is the FER+ column order (Barsoum et al., ICMI 2016)::

    0 neutral, 1 happiness, 2 surprise, 3 sadness, 4 anger, 5 disgust, 6 fear, 7 contempt

The seven basic expressions come first and contempt last, so a 7-class label space is
exactly the first seven canonical classes and an 8-class space is all of them. A dataset
label index therefore *is* a canonical index in every robustfer dataset; each loader
translates its native order through an explicit :class:`LabelMap` declared next to it and
spelled out in ``tests/test_labels.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from robustfer.errors import DatasetError


class Expression(IntEnum):
    """Canonical expression classes (FER+ order)."""

    NEUTRAL = 0
    HAPPINESS = 1
    SURPRISE = 2
    SADNESS = 3
    ANGER = 4
    DISGUST = 5
    FEAR = 6
    CONTEMPT = 7

    @property
    def label(self) -> str:
        """Lower-case name used in reports, checkpoints and JSON output."""
        return self.name.lower()


#: All eight canonical names in order.
EXPRESSIONS_8: tuple[str, ...] = tuple(e.label for e in Expression)
#: The seven basic expressions (no contempt), in canonical order.
EXPRESSIONS_7: tuple[str, ...] = EXPRESSIONS_8[:7]

# Synonyms found in dataset distributions, mapped to canonical names.
_SYNONYMS: dict[str, str] = {
    "neutral": "neutral",
    "neu": "neutral",
    "ne": "neutral",
    "happiness": "happiness",
    "happy": "happiness",
    "hap": "happiness",
    "ha": "happiness",
    "joy": "happiness",
    "surprise": "surprise",
    "surprised": "surprise",
    "sur": "surprise",
    "su": "surprise",
    "sadness": "sadness",
    "sad": "sadness",
    "sa": "sadness",
    "anger": "anger",
    "angry": "anger",
    "ang": "anger",
    "an": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "dis": "disgust",
    "di": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "fe": "fear",
    "contempt": "contempt",
    "con": "contempt",
    "co": "contempt",
}


def class_names(num_classes: int) -> tuple[str, ...]:
    """Return the canonical class names for a 7- or 8-class label space.

    Raises:
        DatasetError: if ``num_classes`` is not 7 or 8.
    """
    if num_classes == 7:
        return EXPRESSIONS_7
    if num_classes == 8:
        return EXPRESSIONS_8
    raise DatasetError(
        f"num_classes={num_classes} is not a robustfer label space; expected 7 "
        "(basic expressions) or 8 (basic + contempt)."
    )


def canonical_name(name: str) -> str:
    """Map a dataset's spelling of an expression ("Happy", "angry", "SU") to its canonical name.

    Raises:
        DatasetError: if the spelling is not known.
    """
    key = name.strip().lower()
    if key not in _SYNONYMS:
        raise DatasetError(
            f"unknown expression name {name!r}; expected one of {list(EXPRESSIONS_8)} "
            "or a common synonym (happy, angry, sad, surprised, fearful, ...)."
        )
    return _SYNONYMS[key]


def canonical_index(name: str) -> int:
    """Canonical index of an expression name or synonym."""
    return EXPRESSIONS_8.index(canonical_name(name))


@dataclass(frozen=True)
class LabelMap:
    """A dataset's native label order and its mapping to canonical indices.

    Attributes:
        dataset: dataset name, for error messages.
        native: native label names in the dataset's own order (index = native id).
        to_canonical: native id -> canonical index, or ``None`` for labels robustfer drops
            (e.g. FER+ "unknown" and "NF").
    """

    dataset: str
    native: tuple[str, ...]
    to_canonical: tuple[int | None, ...]

    @classmethod
    def from_names(
        cls, dataset: str, native: Sequence[str], drop: Sequence[str] = ()
    ) -> LabelMap:
        """Build a map from native names, resolving each through :func:`canonical_name`."""
        mapping: list[int | None] = []
        for n in native:
            mapping.append(None if n in drop else canonical_index(n))
        return cls(dataset, tuple(native), tuple(mapping))

    def __call__(self, native_id: int) -> int | None:
        """Canonical index of ``native_id`` (``None`` when the class is dropped)."""
        if not 0 <= native_id < len(self.native):
            raise DatasetError(
                f"{self.dataset}: label {native_id} is out of range; the native label "
                f"order has {len(self.native)} classes {list(self.native)}."
            )
        return self.to_canonical[native_id]

    def as_table(self) -> Mapping[str, str | None]:
        """``{native name: canonical name or None}``, for docs and tests."""
        return {
            n: (None if c is None else EXPRESSIONS_8[c])
            for n, c in zip(self.native, self.to_canonical)
        }
