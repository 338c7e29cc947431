"""Every dataset's native label order, spelled out, and the canonical label helpers."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from robustfer.data.affectnet import AFFECTNET_LABELS
from robustfer.data.ckplus import CKPLUS_LABELS
from robustfer.data.fer2013 import FER2013_LABELS
from robustfer.data.ferplus import FERPLUS_LABELS
from robustfer.data.folder import FOLDER_LABELS
from robustfer.data.jaffe import JAFFE_LABELS
from robustfer.data.kdef import KDEF_LABELS
from robustfer.data.labels import (
    EXPRESSIONS_8,
    Expression,
    canonical_index,
    canonical_name,
    class_names,
)
from robustfer.data.rafdb import RAFDB_LABELS, read_rafdb_labels
from robustfer.data.sfew import SFEW_LABELS
from robustfer.errors import DatasetError


def test_ferplus_table() -> None:
    assert FERPLUS_LABELS.as_table() == {
        "neutral": "neutral", "happiness": "happiness", "surprise": "surprise",
        "sadness": "sadness", "anger": "anger", "disgust": "disgust", "fear": "fear",
        "contempt": "contempt", "unknown": None, "NF": None,
    }
    assert FERPLUS_LABELS(0) == 0 and FERPLUS_LABELS(7) == 7 and FERPLUS_LABELS(9) is None


def test_fer2013_table() -> None:
    assert FER2013_LABELS.as_table() == {
        "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
        "sad": "sadness", "surprise": "surprise", "neutral": "neutral",
    }
    assert FER2013_LABELS(0) == 4 and FER2013_LABELS(3) == 1 and FER2013_LABELS(6) == 0


def test_rafdb_table() -> None:
    assert RAFDB_LABELS.as_table() == {
        "surprise": "surprise", "fear": "fear", "disgust": "disgust",
        "happiness": "happiness", "sadness": "sadness", "anger": "anger", "neutral": "neutral",
    }
    # file labels are 1-based: file 1 = native 0 (surprise), file 4 = happiness, 7 = neutral
    assert RAFDB_LABELS(0) == 2 and RAFDB_LABELS(3) == 1 and RAFDB_LABELS(6) == 0


def test_affectnet_table() -> None:
    assert AFFECTNET_LABELS.as_table() == {
        "neutral": "neutral", "happy": "happiness", "sad": "sadness", "surprise": "surprise",
        "fear": "fear", "disgust": "disgust", "anger": "anger", "contempt": "contempt",
        "none": None, "uncertain": None, "no-face": None,
    }
    assert AFFECTNET_LABELS(1) == 1 and AFFECTNET_LABELS(2) == 3 and AFFECTNET_LABELS(6) == 4
    assert AFFECTNET_LABELS(7) == 7 and AFFECTNET_LABELS(10) is None


def test_sfew_table() -> None:
    assert SFEW_LABELS.as_table() == {
        "Angry": "anger", "Disgust": "disgust", "Fear": "fear", "Happy": "happiness",
        "Neutral": "neutral", "Sad": "sadness", "Surprise": "surprise",
    }
    assert SFEW_LABELS(0) == 4 and SFEW_LABELS(4) == 0


def test_ckplus_table() -> None:
    assert CKPLUS_LABELS.as_table() == {
        "neutral": "neutral", "anger": "anger", "contempt": "contempt", "disgust": "disgust",
        "fear": "fear", "happy": "happiness", "sadness": "sadness", "surprise": "surprise",
    }
    assert CKPLUS_LABELS(2) == 7 and CKPLUS_LABELS(5) == 1 and CKPLUS_LABELS(7) == 2


def test_jaffe_table() -> None:
    assert JAFFE_LABELS.as_table() == {
        "AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral",
        "SA": "sadness", "SU": "surprise",
    }
    assert JAFFE_LABELS(0) == 4 and JAFFE_LABELS(4) == 0


def test_kdef_table() -> None:
    assert KDEF_LABELS.as_table() == {
        "afraid": "fear", "angry": "anger", "disgusted": "disgust", "happy": "happiness",
        "neutral": "neutral", "sad": "sadness", "surprised": "surprise",
    }
    assert KDEF_LABELS(0) == 6 and KDEF_LABELS(3) == 1


def test_folder_table_is_identity() -> None:
    assert FOLDER_LABELS.as_table() == {n: n for n in EXPRESSIONS_8}
    assert FOLDER_LABELS(7) == 7


def test_canonical_synonyms() -> None:
    assert canonical_name("Happy") == "happiness"
    assert canonical_name(" ANGRY ") == "anger"
    assert canonical_name("surprised") == "surprise"
    assert canonical_name("afraid") == "fear"
    assert canonical_name("SA") == "sadness"
    assert canonical_index("contempt") == Expression.CONTEMPT == 7
    with pytest.raises(DatasetError, match="grumpy"):
        canonical_name("grumpy")


def test_class_names_7_is_prefix_of_8() -> None:
    assert class_names(7) == class_names(8)[:7]
    assert class_names(8)[7] == "contempt"
    with pytest.raises(DatasetError, match="num_classes=6"):
        class_names(6)


def _real_rafdb_file() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    for r in (os.environ.get("ROBUSTFER_DATA"), repo.parent / "shared" / "data"):
        if r and (Path(r) / "rafdb_labels" / "list_patition_label.txt").is_file():
            return Path(r) / "rafdb_labels" / "list_patition_label.txt"
    return None


def test_real_rafdb_label_file() -> None:
    path = _real_rafdb_file()
    if path is None:
        pytest.skip("RAF-DB label file not found under $ROBUSTFER_DATA or ../shared/data")
    rows = read_rafdb_labels(path)
    train = Counter(lab for name, lab in rows if name.startswith("train_"))
    test = Counter(lab for name, lab in rows if name.startswith("test_"))
    assert sum(train.values()) == 12271 and sum(test.values()) == 3068
    names = class_names(7)
    # The published RAF-DB basic class histogram.
    assert {names[k]: v for k, v in train.items()} == {
        "surprise": 1290, "fear": 281, "disgust": 717, "happiness": 4772,
        "sadness": 1982, "anger": 705, "neutral": 2524,
    }
    assert {names[k]: v for k, v in test.items()} == {
        "surprise": 329, "fear": 74, "disgust": 160, "happiness": 1185,
        "sadness": 478, "anger": 162, "neutral": 680,
    }
    assert max(train, key=train.__getitem__) == Expression.HAPPINESS


def test_real_rafdb_noise_file_is_train_only() -> None:
    path = _real_rafdb_file()
    if path is None or not (path.parent / "noise01.txt").is_file():
        pytest.skip("RAF-DB noisy label files not found")
    noisy = read_rafdb_labels(path.parent / "noise01.txt")
    clean = [r for r in read_rafdb_labels(path) if r[0].startswith("train_")]
    assert [n for n, _ in noisy] == [n for n, _ in clean]
    flipped = sum(a != b for (_, a), (_, b) in zip(noisy, clean)) / len(clean)
    assert 0.02 < flipped < 0.5
