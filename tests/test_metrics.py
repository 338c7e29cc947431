"""Metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from robustfer.data.labels import EXPRESSIONS_7, EXPRESSIONS_8
from robustfer.engine.metrics import (
    MetricsError,
    classification_metrics,
    confusion_matrix,
    format_table,
    group_accuracy,
)
from robustfer.errors import RobustferError


def _sklearn_reference(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict:
    present_f1 = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "balanced": skm.balanced_accuracy_score(y_true, y_pred),
            "macro_f1": skm.f1_score(
                y_true, y_pred, labels=present_f1, average="macro", zero_division=0
            ),
            "cm": skm.confusion_matrix(y_true, y_pred, labels=list(range(k))),
            "precision": skm.precision_score(
                y_true, y_pred, labels=list(range(k)), average=None, zero_division=0
            ),
            "recall": skm.recall_score(
                y_true, y_pred, labels=list(range(k)), average=None, zero_division=0
            ),
            "f1": skm.f1_score(
                y_true, y_pred, labels=list(range(k)), average=None, zero_division=0
            ),
        }


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.choice([7, 8]))
    names = EXPRESSIONS_7 if k == 7 else EXPRESSIONS_8
    n = int(rng.integers(1, 300))
    # Restrict the true labels to a random subset so some classes are often absent.
    true_classes = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    y_true = rng.choice(true_classes, size=n)
    noisy = rng.random(n) < 0.4
    y_pred = np.where(noisy, rng.integers(0, k, size=n), y_true)

    got = classification_metrics(y_true, y_pred, names)
    ref = _sklearn_reference(y_true, y_pred, k)

    assert got["n"] == n
    assert got["accuracy"] == pytest.approx(ref["accuracy"])
    assert got["mean_class_accuracy"] == pytest.approx(ref["balanced"])
    assert got["macro_f1"] == pytest.approx(ref["macro_f1"])
    np.testing.assert_array_equal(np.array(got["confusion"]), ref["cm"])
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, k), ref["cm"])
    for i, name in enumerate(names):
        pc = got["per_class"][name]
        assert pc["support"] == int((y_true == i).sum())
        assert pc["accuracy"] == pc["recall"]
        # sklearn reports 0 where robustfer reports None (undefined).
        assert (pc["recall"] or 0.0) == pytest.approx(ref["recall"][i])
        assert (pc["precision"] or 0.0) == pytest.approx(ref["precision"][i])
        assert (pc["f1"] or 0.0) == pytest.approx(ref["f1"][i])
    absent = [names[i] for i in range(k) if i not in set(y_true.tolist())]
    assert got["absent_classes"] == absent
    json.dumps(got)


def test_hand_computed_example() -> None:
    names = ["c0", "c1", "c2", "c3"]
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    got = classification_metrics(y_true, y_pred, names)

    assert got["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert got["n"] == 6
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert got["macro_f1"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    assert got["absent_classes"] == ["c3"]
    assert got["per_class"]["c0"] == {
        "support": 3, "predicted": 2, "accuracy": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3), "precision": 1.0, "f1": pytest.approx(0.8),
    }
    assert got["per_class"]["c1"]["precision"] == pytest.approx(0.5)
    assert got["per_class"]["c2"]["f1"] == pytest.approx(2 / 3)
    assert got["per_class"]["c3"] == {
        "support": 0, "predicted": 0, "accuracy": None,
        "recall": None, "precision": None, "f1": None,
    }


def test_class_predicted_but_absent_from_truth() -> None:
    y_true = np.array([0, 0, 1])
    y_pred = np.array([0, 2, 1])
    got = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    # Class "c" has no true sample: excluded from the mean recall, F1 = 0 in the macro F1.
    assert got["absent_classes"] == ["c"]
    assert got["mean_class_accuracy"] == pytest.approx(0.75)
    assert got["per_class"]["c"]["recall"] is None
    assert got["per_class"]["c"]["precision"] == 0.0
    assert got["per_class"]["c"]["f1"] == 0.0
    assert got["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert got["mean_class_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(y_true, y_pred)
        )
    assert got["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0)
    )


def test_class_absent_everywhere_is_excluded_from_macro_f1() -> None:
    y_true = [0, 1, 1, 0]
    y_pred = [0, 1, 0, 0]
    got = classification_metrics(y_true, y_pred, EXPRESSIONS_7)
    ref = skm.f1_score(y_true, y_pred, labels=[0, 1], average="macro")
    assert got["macro_f1"] == pytest.approx(ref)
    assert got["absent_classes"] == list(EXPRESSIONS_7[2:])


def test_empty_and_invalid_inputs() -> None:
    with pytest.raises(MetricsError, match="empty"):
        classification_metrics([], [], EXPRESSIONS_7)
    assert issubclass(MetricsError, RobustferError)
    assert issubclass(MetricsError, ValueError)
    with pytest.raises(MetricsError, match="same samples"):
        classification_metrics([0, 1], [0], EXPRESSIONS_7)
    with pytest.raises(MetricsError, match="outside"):
        classification_metrics([0, 7], [0, 1], EXPRESSIONS_7)
    with pytest.raises(MetricsError, match="integer"):
        classification_metrics([0.5], [0], EXPRESSIONS_7)
    with pytest.raises(MetricsError, match="1-D"):
        classification_metrics(np.zeros((2, 7)), [0, 1], EXPRESSIONS_7)
    with pytest.raises(MetricsError, match="unique"):
        classification_metrics([0], [0], ["a", "a"])
    np.testing.assert_array_equal(confusion_matrix([], [], 3), np.zeros((3, 3)))
    assert confusion_matrix([], [], 3).dtype == np.int64


def test_group_accuracy_hand_example() -> None:
    y_true = [0, 1, 2, 0, 1, 2, 0]
    y_pred = [0, 1, 0, 0, 2, 2, 1]
    groups = ["pose45", "pose0", "pose45", None, "pose0", "pose15", "pose45"]
    got = group_accuracy(y_true, y_pred, groups)
    assert list(got) == ["pose0", "pose15", "pose45"]
    assert got["pose0"] == {"n": 2, "accuracy": 0.5}
    assert got["pose15"] == {"n": 1, "accuracy": 1.0}
    assert got["pose45"] == {"n": 3, "accuracy": pytest.approx(1 / 3)}

    numeric = group_accuracy([1, 1, 1], [1, 0, 1], np.array([30, -30, 0]))
    assert list(numeric) == [-30, 0, 30]
    assert all(type(key) is int for key in numeric)
    json.dumps(numeric)
    assert group_accuracy([0], [0], [None]) == {}
    with pytest.raises(MetricsError, match="one group"):
        group_accuracy([0, 1], [0, 1], ["a"])


def test_format_table_alignment() -> None:
    rows = [
        {"subset": "clean", "n": 3589, "accuracy": 0.87654, "loss": 0.5},
        {"subset": "pose45", "n": 12, "accuracy": 0.5, "loss": None},
        {"subset": "lower_face", "accuracy": 1.0},
    ]
    table = format_table(rows, ["subset", "n", "accuracy", "loss"])
    lines = table.split("\n")
    assert len(lines) == 5
    assert lines[0].split() == ["subset", "n", "accuracy", "(%)", "loss"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "87.65" in lines[2] and "50.00" in lines[3] and "100.00" in lines[4]
    assert "0.5000" in lines[2]
    assert lines[3].split()[-1] == "-"
    # Numeric columns are right-aligned: values end at the same column as the header.
    acc_end = lines[0].index("(%)") + len("(%)")
    for line in lines[2:]:
        value = line.split()[2]
        assert line.index(value) + len(value) == acc_end
    n_end = lines[0].index(" n ") + 2
    assert lines[2][:n_end].endswith("3589") and lines[3][:n_end].endswith("12")
    # Text columns are left-aligned.
    starts = ("subset", "clean ", "pose45 ", "lower_face")
    assert all(line.startswith(starts) for line in lines[:1] + lines[2:])


def test_format_table_percent_columns() -> None:
    rows = [{"macro_f1": 0.5, "val_accuracy": 0.25, "mean_class_accuracy": 0.125}]
    default = format_table(rows, ["macro_f1", "val_accuracy", "mean_class_accuracy"])
    assert "0.5000" in default and "25.00" in default and "12.50" in default
    forced = format_table(rows, ["macro_f1"], percent_columns=["macro_f1"])
    assert "50.00" in forced and "macro_f1 (%)" in forced
