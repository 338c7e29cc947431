"""Extended Cohn-Kanade, CK+ (Lucey et al., CVPR-W 2010), in either of its common layouts.

(a) the original distribution (``Emotion`` may also sit one level down, e.g.
``Emotion_labels/Emotion``; likewise ``cohn-kanade-images``)::

    <root>/cohn-kanade-images/S005/001/S005_001_00000001.png ...
    <root>/Emotion/S005/001/S005_001_00000011_emotion.txt      (holds e.g. "3.0000000e+00")

Only the 327 sequences with an emotion file are labelled. Each contributes its last
``peak_frames`` frames (default 3) with the sequence's label and, with
``include_neutral=True``, its first frame as neutral.

(b) the CK+48 re-distribution: ``<root>/<class>/S010_004_00000017.png`` with class folders
anger, contempt, disgust, fear, happy, sadness, surprise (the subject is the ``S010`` prefix).

Native codes: 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness,
7 surprise. The label space has 8 classes (``num_classes=7`` drops contempt). CK+ has no
official split: ``train``/``test`` are subject-independent folds (:mod:`robustfer.data.folds`).
"""

from __future__ import annotations

import re
from pathlib import Path

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.folder import list_images
from robustfer.data.folds import FOLD_SPLITS, split_by_subject
from robustfer.data.labels import Expression, LabelMap
from robustfer.errors import DatasetError

CKPLUS_LABELS = LabelMap.from_names(
    "ckplus",
    ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"),
)
# Native name -> canonical index (CK+ drops no class).
_CANON = {
    n: c for n, c in zip(CKPLUS_LABELS.native, CKPLUS_LABELS.to_canonical) if c is not None
}
_SUBJECT = re.compile(r"^(S\d+)_\d+_\d+$", re.IGNORECASE)


def _find_dir(root: Path, name: str) -> Path | None:
    for d in (root / name, *sorted(root.glob(f"*/{name}"))):
        if d.is_dir():
            return d
    return None


def read_emotion_file(path: Path) -> int:
    """Canonical label of one CK+ ``*_emotion.txt`` file."""
    text = path.read_text().strip()
    try:
        code = float(text)
    except ValueError:
        code = -1.0
    if not code.is_integer() or not 0 <= code < len(CKPLUS_LABELS.native):
        raise DatasetError(
            f"{path}: emotion code {text!r} is not one of 0..7 "
            f"({', '.join(CKPLUS_LABELS.native)}); expected a number like 3.0000000e+00."
        )
    return _CANON[CKPLUS_LABELS.native[int(code)]]


def _original(root: Path, images: Path, peak_frames: int, include_neutral: bool) -> list[Sample]:
    emotion = _find_dir(root, "Emotion")
    if emotion is None:
        raise DatasetError(
            f"CK+ folder {root} has cohn-kanade-images but no Emotion/ label folder; "
            "extract Emotion_labels.zip next to it."
        )
    samples = []
    for txt in sorted(emotion.rglob("*_emotion.txt")):
        seq = txt.parent.relative_to(emotion)
        frames = list_images(images / seq)
        if not frames:
            raise DatasetError(
                f"{txt} labels sequence {seq.as_posix()}, but {images / seq} holds no images."
            )
        label, subject = read_emotion_file(txt), seq.parts[0]
        chosen = [(f, label) for f in frames[-peak_frames:]]
        if include_neutral and len(frames) > peak_frames:
            chosen.insert(0, (frames[0], int(Expression.NEUTRAL)))
        samples += [
            Sample(id=f.relative_to(root).as_posix(), label=lab, path=f, subject=subject)
            for f, lab in chosen
        ]
    return samples


def _ck48(root: Path) -> list[Sample]:
    samples = []
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = _CANON.get(cls_dir.name.lower())
        if label is None:
            raise DatasetError(
                f"CK+48 class folder {cls_dir} is unknown; expected one of {list(_CANON)}."
            )
        for f in list_images(cls_dir):
            m = _SUBJECT.match(f.stem)
            if m is None:
                raise DatasetError(
                    f"CK+48 image {f} is not named like S010_004_00000017.png, so its "
                    "subject is unknown; rename it or remove it."
                )
            samples.append(
                Sample(id=f.relative_to(root).as_posix(), label=label, path=f,
                       subject=m.group(1).upper())
            )
    return samples


@register_dataset(
    "ckplus",
    splits=FOLD_SPLITS,
    dirnames=("ckplus", "CK+", "ck+", "CKPlus", "CK+48"),
    description="CK+ peak frames or CK+48, subject-independent k-fold (8 classes)",
    has_validation=False,
)
def build_ckplus(
    root: Path,
    split: str,
    fold: int = 0,
    num_folds: int = 10,
    seed: int = 0,
    peak_frames: int = 3,
    include_neutral: bool = False,
    num_classes: int = 8,
    cache: bool = True,
) -> FERDataset:
    """Load one subject-independent fold of CK+.

    Args:
        root: CK+ folder in layout (a) or (b) (see the module docstring).
        split: ``train``, ``test`` (subjects of group ``fold``) or ``all``.
        fold: which subject group is the test part.
        num_folds: number of subject groups.
        seed: subject shuffling seed.
        peak_frames: layout (a): last frames of each sequence taken with its label.
        include_neutral: layout (a): also take each sequence's first frame as neutral.
        num_classes: 8, or 7 to drop contempt.
        cache: keep decoded images in memory.
    """
    if num_classes not in (7, 8):
        raise DatasetError(f"ckplus num_classes must be 7 or 8, got {num_classes}.")
    if peak_frames < 1:
        raise DatasetError(f"ckplus peak_frames must be at least 1, got {peak_frames}.")
    images = _find_dir(root, "cohn-kanade-images")
    if images is not None:
        samples = _original(root, images, peak_frames, include_neutral)
    elif root.is_dir() and any(
        p.is_dir() and p.name.lower() in CKPLUS_LABELS.native for p in root.iterdir()
    ):
        samples = _ck48(root)
    else:
        raise DatasetError(
            f"{root} is not a CK+ folder: expected cohn-kanade-images/ and Emotion/ "
            "(original) or class folders anger/, contempt/, ... (CK+48)."
        )
    # Folds are dealt before contempt is dropped, so a fold holds the same subjects in the
    # 7- and 8-class setups.
    samples = split_by_subject(
        samples, split, dataset="ckplus", fold=fold, num_folds=num_folds, seed=seed
    )
    if num_classes == 7:
        samples = [s for s in samples if s.label != Expression.CONTEMPT]
    return FERDataset("ckplus", split, samples, num_classes, root=root, cache=cache)
