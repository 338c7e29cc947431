"""RAF-DB basic emotion subset (Li et al., CVPR 2017).

Layout of the official ``basic`` distribution::

    <root>/EmoLabel/list_patition_label.txt        (also accepted directly in <root>)
    <root>/Image/aligned/train_00001_aligned.jpg   (variant="aligned", the default)
    <root>/Image/original/train_00001.jpg          (variant="original")

(``aligned/`` and ``original/`` directly in ``<root>`` are accepted too.)

Each label line is ``train_00001.jpg 5`` (or ``test_0001.jpg``): the image name, then a label
1..7 in the native order Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral (file
label ``k`` is ``RAFDB_LABELS`` native id ``k - 1``). The split is the name prefix: 12,271
train and 3,068 test images. RAF-DB has no validation split.

``label_file`` swaps the *train* labels for another file of the same format, e.g. the
noisy-label files ``noise01.txt`` ... used in label-noise studies (a name is looked up in
``<root>/EmoLabel``, ``<root>`` and then as given). Test labels always come from the clean
file, so evaluation is never against noisy labels.
"""

from __future__ import annotations

from pathlib import Path

from robustfer.data.base import FERDataset, Sample, register_dataset
from robustfer.data.labels import LabelMap
from robustfer.errors import DatasetError

RAFDB_LABELS = LabelMap.from_names(
    "rafdb", ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
)
LABEL_FILES = ("list_patition_label.txt", "list_partition_label.txt")
VARIANTS = ("aligned", "original")


def read_rafdb_labels(path: Path) -> list[tuple[str, int]]:
    """Parse a RAF-DB label file into ``(image name, canonical label)`` rows, in file order.

    Raises:
        DatasetError: naming ``file:line`` on a malformed line or a label outside 1..7.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RAF-DB label file {path} does not exist.")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            name = parts[0]
            if len(parts) != 2 or not name.startswith(("train_", "test_")):
                raise DatasetError(
                    f"{path}:{lineno}: malformed line {line.strip()!r}; expected "
                    "'train_00001.jpg 5' (image name, label 1..7)."
                )
            if not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7:
                raise DatasetError(
                    f"{path}:{lineno}: label {parts[1]!r} is not 1..7 "
                    f"({', '.join(RAFDB_LABELS.native)}). Check that this is a RAF-DB basic file."
                )
            label = RAFDB_LABELS(int(parts[1]) - 1)
            if label is not None:  # always: RAF-DB drops no native class
                rows.append((name, label))
    if not rows:
        raise DatasetError(f"RAF-DB label file {path} has no lines.")
    return rows


def _find_label_file(root: Path, label_file: str | Path | None) -> Path:
    if label_file is None:
        candidates = [d / n for d in (root / "EmoLabel", root) for n in LABEL_FILES]
    else:
        candidates = [root / "EmoLabel" / label_file, root / label_file, Path(label_file)]
    for p in candidates:
        if p.is_file():
            return p
    raise DatasetError(
        f"RAF-DB label file not found; looked for {', '.join(map(str, candidates))}. "
        "Point the root at the RAF-DB 'basic' folder."
    )


@register_dataset(
    "rafdb",
    splits=("train", "test"),
    dirnames=("rafdb", "RAF-DB", "raf-db", "RAFDB", "basic"),
    description="RAF-DB basic, aligned or original images (7 classes, train/test)",
    has_validation=False,
)
def build_rafdb(
    root: Path,
    split: str,
    variant: str = "aligned",
    label_file: str | Path | None = None,
    cache: bool = True,
) -> FERDataset:
    """Load the RAF-DB basic train or test split.

    Args:
        root: the ``basic`` folder (holding ``EmoLabel/`` and ``Image/``).
        split: ``train`` or ``test``.
        variant: ``aligned`` (100x100 aligned faces) or ``original`` images.
        label_file: another train label file, e.g. ``noise01.txt`` (see module docstring).
        cache: keep decoded images in memory.
    """
    if variant not in VARIANTS:
        raise DatasetError(f"rafdb variant {variant!r} is unknown; expected one of {VARIANTS}.")
    path = _find_label_file(root, label_file if split == "train" else None)
    img_dir = next(
        (d for d in (root / "Image" / variant, root / variant) if d.is_dir()), None
    )
    if img_dir is None:
        raise DatasetError(
            f"RAF-DB image folder {root / 'Image' / variant} not found; extract "
            f"{variant}.zip into {root / 'Image'}."
        )
    samples = []
    for name, label in read_rafdb_labels(path):
        if not name.startswith(f"{split}_"):
            continue
        file = f"{Path(name).stem}_aligned.jpg" if variant == "aligned" else name
        samples.append(Sample(id=name, label=label, path=img_dir / file))
    if not samples:
        raise DatasetError(f"{path} has no {split}_* lines; is it the RAF-DB basic label file?")
    return FERDataset("rafdb", split, samples, 7, root=root, cache=cache)
