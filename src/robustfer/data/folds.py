"""Subject-independent k-fold splits for small posed datasets (CK+, JAFFE, KDEF).

These datasets have no official train/test split; papers report k-fold cross-validation in
which no subject appears in both the training and the test part. robustfer makes the folds
reproducible: the distinct subject ids are sorted, shuffled with ``random.Random(seed)`` and
dealt round-robin into ``num_folds`` groups. Split ``test`` is group ``fold``, ``train`` is
every other group and ``all`` is every sample.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable, Sequence

from robustfer.data.base import FERDataset, Sample
from robustfer.errors import DatasetError

#: Split names accepted by loaders that use subject folds.
FOLD_SPLITS: tuple[str, ...] = ("train", "test", "all")


def subject_groups(subjects: Iterable[str], num_folds: int, seed: int = 0) -> list[list[str]]:
    """Deal the distinct subjects into ``num_folds`` disjoint groups.

    Args:
        subjects: subject ids (duplicates are fine).
        num_folds: number of groups, at least 2 and at most the number of distinct subjects.
        seed: shuffling seed; the same subjects and seed always give the same groups.

    Raises:
        DatasetError: if ``num_folds`` cannot be satisfied.
    """
    unique = sorted(set(subjects))
    if not 2 <= num_folds <= len(unique):
        raise DatasetError(
            f"num_folds={num_folds} is invalid for {len(unique)} subjects; expected "
            f"2 <= num_folds <= {len(unique)}. Use fewer folds."
        )
    random.Random(seed).shuffle(unique)
    return [sorted(unique[i::num_folds]) for i in range(num_folds)]


def subject_folds(
    subjects: Iterable[str], num_folds: int, fold: int, seed: int = 0
) -> tuple[set[str], set[str]]:
    """Return ``(train_subjects, test_subjects)`` of fold ``fold`` (see :func:`subject_groups`).

    Raises:
        DatasetError: if ``fold`` is not in ``range(num_folds)``.
    """
    if not 0 <= fold < num_folds:
        raise DatasetError(
            f"fold={fold} is out of range for num_folds={num_folds}; expected 0..{num_folds - 1}."
        )
    groups = subject_groups(subjects, num_folds, seed)
    test = set(groups[fold])
    train = {s for i, g in enumerate(groups) if i != fold for s in g}
    return train, test


def split_by_subject(
    samples: Sequence[Sample],
    split: str,
    *,
    dataset: str,
    fold: int,
    num_folds: int,
    seed: int,
) -> list[Sample]:
    """The samples of ``split`` (``train``, ``test`` or ``all``) under one subject fold."""
    if split not in FOLD_SPLITS:
        raise DatasetError(
            f"{dataset}: split {split!r} is unknown; expected one of {list(FOLD_SPLITS)}."
        )
    if not samples:
        raise DatasetError(f"{dataset}: no samples found, so no folds can be made.")
    if split == "all":
        return list(samples)
    train, test = subject_folds((s.subject or "" for s in samples), num_folds, fold, seed)
    keep = test if split == "test" else train
    return [s for s in samples if (s.subject or "") in keep]


def hash_fold(group: str, num_folds: int) -> int:
    """A group's fold, 0..num_folds-1, from a fixed hash of its name (CRC-32; the same on every
    machine and Python version, unlike ``hash``)."""
    return zlib.crc32(group.encode("utf-8")) % num_folds


def held_out_by_group(ds: FERDataset, group_of: Callable[[str], str], num_folds: int, held: bool,
                      subset: str, naming: str) -> FERDataset:
    """The samples whose group (movie, person...) falls in fold 0 (``held``) or outside it, as the
    subset ``subset``; an empty result is an error that shows the expected file ``naming``."""
    keep = [i for i, s in enumerate(ds.samples) if (hash_fold(group_of(s.id), num_folds) == 0) == held]
    if not keep:
        raise DatasetError(f"{ds.spec}: no sample in the {subset} part; are the file names {naming}?")
    return ds.subset_of(keep, subset)
