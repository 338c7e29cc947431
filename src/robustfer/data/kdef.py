"""KDEF, the Karolinska Directed Emotional Faces (Lundqvist et al., 1998), with head pose.

Layout of the distribution (``KDEF_and_AKDEF/KDEF/`` -- a root holding ``KDEF/`` is searched
there only, so the averaged AKDEF faces are never picked up)::

    <root>/AF01/AF01ANFL.JPG ...

A file name is session (A/B), gender (F/M), two-digit id, expression code (AF afraid,
AN angry, DI disgusted, HA happy, NE neutral, SA sad, SU surprised) and angle code
(FL full left, HL half left, S straight, HR half right, FR full right), e.g. ``AF01ANS.JPG``.
The subject is gender + id (``F01``): sessions A and B photograph the same person.

Pose: ``Sample.pose`` is the yaw in degrees, FL -90, HL -45, S 0, HR +45, FR +90; negative
means the subject turned to *their* left, as KDEF names it. ``Sample.pose_bin`` is 0..4 in the
order FL, HL, S, HR, FR. ``angles`` restricts the angles loaded.

Images are found recursively; non-image files are ignored, and an image whose name does not
follow the pattern is an error unless ``strict=False`` skips it (some copies of KDEF carry a
few misnamed files). KDEF has no official split: ``train``/``test`` are subject-independent
folds (:mod:`robustfer.data.folds`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.folder import list_images
from robustfer.data.folds import FOLD_SPLITS, split_by_subject
from robustfer.data.labels import LabelMap
from robustfer.errors import DatasetError

#: Native order: the file-name expression codes AF, AN, DI, HA, NE, SA, SU.
KDEF_CODES: tuple[str, ...] = ("AF", "AN", "DI", "HA", "NE", "SA", "SU")
KDEF_LABELS = LabelMap.from_names(
    "kdef", ("afraid", "angry", "disgusted", "happy", "neutral", "sad", "surprised")
)
_CANON = {
    code: c for code, c in zip(KDEF_CODES, KDEF_LABELS.to_canonical) if c is not None
}
#: Angle code -> yaw in degrees; the order is also the pose bin order.
KDEF_ANGLES: dict[str, float] = {"FL": -90.0, "HL": -45.0, "S": 0.0, "HR": 45.0, "FR": 90.0}
_NAME = re.compile(
    r"^([AB])([FM])(\d{2})(" + "|".join(KDEF_CODES) + r")(FL|HL|S|HR|FR)$", re.IGNORECASE
)


def parse_kdef_name(name: str) -> tuple[str, int, str] | None:
    """``(subject, canonical label, angle code)`` of a KDEF file name, or ``None``."""
    m = _NAME.match(Path(name).stem)
    if m is None:
        return None
    _, gender, num, code, angle = (g.upper() for g in m.groups())
    return gender + num, _CANON[code], angle


@register_dataset(
    "kdef",
    splits=FOLD_SPLITS,
    dirnames=("kdef", "KDEF", "KDEF_and_AKDEF"),
    description="KDEF posed expressions at five yaw angles, subject-independent k-fold (7)",
    has_validation=False,
)
def build_kdef(
    root: Path,
    split: str,
    fold: int = 0,
    num_folds: int = 10,
    seed: int = 0,
    angles: Sequence[str] | None = None,
    strict: bool = True,
    cache: bool = True,
) -> FERDataset:
    """Load one subject-independent fold of KDEF.

    Args:
        root: the ``KDEF`` folder (or a folder holding it).
        split: ``train``, ``test`` (subjects of group ``fold``) or ``all``.
        fold: which subject group is the test part.
        num_folds: number of subject groups.
        seed: subject shuffling seed.
        angles: angle codes to keep, e.g. ``("S", "HL", "HR")`` or ``"S,HL,HR"``; ``None``
            keeps all five.
        strict: raise on image files with unparseable names (else skip them).
        cache: keep decoded images in memory.
    """
    if isinstance(angles, str):  # "S,HL" from a config or the command line
        angles = angles.split(",")
    keep = [a.strip().upper() for a in angles] if angles is not None else list(KDEF_ANGLES)
    bad = [a for a in keep if a not in KDEF_ANGLES]
    if bad or not keep:
        raise DatasetError(
            f"kdef angles {list(angles or [])} invalid ({bad}); expected a non-empty subset "
            f"of {list(KDEF_ANGLES)}."
        )
    if not root.is_dir():
        raise DatasetError(f"KDEF folder {root} does not exist.")
    search = root / "KDEF" if (root / "KDEF").is_dir() else root
    bins = list(KDEF_ANGLES)
    samples = []
    for f in list_images(search):
        parsed = parse_kdef_name(f.name)
        if parsed is None:
            if strict:
                raise DatasetError(
                    f"KDEF image {f} is not named like AF01ANS.JPG (session, gender, id, "
                    "expression, angle); rename or remove it, or pass strict=False to skip."
                )
            continue
        subject, label, angle = parsed
        samples.append(
            Sample(
                id=f.relative_to(root).as_posix(), label=label, path=f, subject=subject,
                pose=KDEF_ANGLES[angle], pose_bin=bins.index(angle),
            )
        )
    # Folds are dealt over all angles so a fold's subjects do not depend on ``angles``.
    samples = split_by_subject(
        samples, split, dataset="kdef", fold=fold, num_folds=num_folds, seed=seed
    )
    yaws = {KDEF_ANGLES[a] for a in keep}
    samples = [s for s in samples if s.pose in yaws]
    return FERDataset("kdef", split, samples, 7, root=root, cache=cache)
