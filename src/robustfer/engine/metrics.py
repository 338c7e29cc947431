"""Classification metrics for expression recognition, in plain numpy.

Conventions used by every function here:

* Labels are canonical class indices ``0 .. num_classes - 1`` (see
  :mod:`robustfer.data.labels`); anything outside that range is an error.
* Accuracies, recalls, precisions and F1 scores are **fractions in [0, 1]**, never
  percentages. :func:`format_table` turns accuracy columns into percentages for display.
* ``accuracy`` is overall (micro) accuracy: correct / evaluated.
* ``mean_class_accuracy`` is the mean per-class recall over the classes **present in the
  ground truth** of the evaluated set. Classes with no true sample have an undefined recall
  and are excluded (they are listed under ``absent_classes``); a class that is predicted
  but absent from the ground truth therefore only lowers the recall of the classes it was
  confused with. This equals :func:`sklearn.metrics.balanced_accuracy_score`.
* ``macro_f1`` is the unweighted mean F1 over the classes that occur in the ground truth
  **or** in the predictions. Classes that occur in neither have an undefined F1 and are
  excluded; a class that is only predicted scores F1 = 0. This equals
  ``sklearn.metrics.f1_score(y_true, y_pred, average="macro", labels=L)`` with ``L`` the
  sorted classes occurring in ``y_true`` or ``y_pred``.
* Per-class values that are undefined (0/0) are reported as ``None`` (JSON ``null``),
  not as 0: recall when the class has no true sample, precision when it is never
  predicted, F1 when both hold.

All dictionaries returned are JSON-serialisable (built-in ``int``, ``float``, ``str``,
``list``, ``dict`` and ``None`` only).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from robustfer.errors import MetricsError


def _as_labels(values: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """Convert ``values`` to a 1-D int64 label array and check its range.

    Args:
        values: a sequence or array of integer class indices (integral floats accepted).
        name: argument name, for error messages.
        num_classes: when given, every label must lie in ``[0, num_classes)``.

    Returns:
        The labels as a 1-D ``int64`` array.

    Raises:
        MetricsError: if the values are not 1-D integer labels or are out of range.
    """
    arr = _to_numpy(values)
    if arr.ndim != 1:
        raise MetricsError(
            f"{name} must be a 1-D sequence of class indices; got an array of shape "
            f"{arr.shape}. Take the argmax of logits first."
        )
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise MetricsError(
            f"{name} must hold integer class indices; got dtype {arr.dtype}."
        )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise MetricsError(
                f"{name} must hold integer class indices; got non-integral values "
                f"such as {arr[arr != np.round(arr)][:3].tolist()}."
            )
    labels = arr.astype(np.int64)
    if num_classes is not None:
        bad = (labels < 0) | (labels >= num_classes)
        if np.any(bad):
            raise MetricsError(
                f"{name} contains class indices {sorted(set(labels[bad].tolist()))[:5]} "
                f"outside [0, {num_classes}); check that the model and the dataset use "
                f"the same {num_classes}-class label space."
            )
    return labels


def _to_numpy(values: Any) -> np.ndarray:
    """``np.asarray`` that also accepts framework tensors exposing ``detach``/``cpu``."""
    if hasattr(values, "detach"):
        values = values.detach()
    if hasattr(values, "cpu"):
        values = values.cpu()
    if hasattr(values, "numpy") and not isinstance(values, np.ndarray):
        values = values.numpy()
    return np.asarray(values)


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    """Raise :class:`MetricsError` when targets and predictions cannot be compared."""
    if y_true.shape[0] != y_pred.shape[0]:
        raise MetricsError(
            f"y_true has {y_true.shape[0]} labels but y_pred has {y_pred.shape[0]}; "
            "they must describe the same samples in the same order."
        )
    if y_true.shape[0] == 0:
        raise MetricsError(
            "cannot compute metrics on an empty set (0 samples); check the dataset "
            "spec and any subset or pose filter."
        )


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Count (true, predicted) pairs.

    Args:
        y_true: true class indices, shape ``(N,)``.
        y_pred: predicted class indices, shape ``(N,)``.
        num_classes: size of the label space; the matrix is ``num_classes`` square.

    Returns:
        ``int64`` array ``cm`` with ``cm[t, p]`` = number of samples of true class ``t``
        predicted as ``p`` (rows = true, columns = predicted). Empty inputs give zeros.

    Raises:
        MetricsError: on mismatched lengths, non-integer or out-of-range labels.
    """
    if num_classes < 1:
        raise MetricsError(f"num_classes must be at least 1; got {num_classes}.")
    t = _as_labels(y_true, "y_true", num_classes)
    p = _as_labels(y_pred, "y_pred", num_classes)
    if t.shape[0] != p.shape[0]:
        _check_pair(t, p)
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(num: float, den: float) -> float | None:
    """``num / den`` as a float, or ``None`` when ``den`` is 0."""
    return float(num) / float(den) if den > 0 else None


def metrics_from_confusion(cm: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Compute the metrics of :func:`classification_metrics` from a confusion matrix.

    Args:
        cm: square count matrix, rows = true class, columns = predicted class.
        class_names: one name per class, in class-index order.

    Returns:
        The dictionary described in :func:`classification_metrics`.

    Raises:
        MetricsError: if the matrix is not square, does not match ``class_names``,
            holds negative counts, or counts no sample at all.
    """
    names = [str(n) for n in class_names]
    mat = np.asarray(cm)
    k = len(names)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise MetricsError(f"confusion matrix must be square; got shape {mat.shape}.")
    if mat.shape[0] != k:
        raise MetricsError(
            f"confusion matrix is {mat.shape[0]}x{mat.shape[0]} but {k} class names were "
            f"given ({names}); pass one name per class."
        )
    if len(set(names)) != k:
        raise MetricsError(f"class names must be unique; got {names}.")
    if np.any(mat < 0):
        raise MetricsError("confusion matrix holds negative counts.")
    mat = mat.astype(np.int64)
    n = int(mat.sum())
    if n == 0:
        raise MetricsError(
            "cannot compute metrics on an empty set (0 samples); check the dataset "
            "spec and any subset or pose filter."
        )
    tp = np.diag(mat)
    support = mat.sum(axis=1)
    predicted = mat.sum(axis=0)

    per_class: dict[str, dict[str, Any]] = {}
    recalls: list[float] = []
    f1s: list[float] = []
    for i, name in enumerate(names):
        recall = _ratio(tp[i], support[i])
        precision = _ratio(tp[i], predicted[i])
        f1 = _ratio(2 * tp[i], support[i] + predicted[i])
        per_class[name] = {
            "support": int(support[i]),
            "predicted": int(predicted[i]),
            "accuracy": recall,
            "recall": recall,
            "precision": precision,
            "f1": f1,
        }
        if recall is not None:
            recalls.append(recall)
        if f1 is not None:
            f1s.append(f1)

    return {
        "n": n,
        "num_classes": k,
        "class_names": names,
        "accuracy": float(tp.sum()) / n,
        "mean_class_accuracy": float(np.mean(recalls)),
        "macro_f1": float(np.mean(f1s)),
        "absent_classes": [names[i] for i in range(k) if support[i] == 0],
        "per_class": per_class,
        "confusion": mat.tolist(),
    }


def classification_metrics(
    y_true: Any, y_pred: Any, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, mean class accuracy, macro F1, per-class scores and the confusion matrix.

    See the module docstring for the exact conventions (fractions in [0, 1]; which
    classes enter ``mean_class_accuracy`` and ``macro_f1``; ``None`` for undefined values).

    Args:
        y_true: true class indices, shape ``(N,)``.
        y_pred: predicted class indices, shape ``(N,)``.
        class_names: one name per class in index order; ``len(class_names)`` is the
            number of classes.

    Returns:
        A JSON-serialisable dict with keys

        * ``n``: number of evaluated samples;
        * ``num_classes`` and ``class_names``;
        * ``accuracy``: correct / n;
        * ``mean_class_accuracy``: mean recall over classes present in ``y_true``;
        * ``macro_f1``: mean F1 over classes present in ``y_true`` or ``y_pred``;
        * ``absent_classes``: names of classes with no sample in ``y_true`` (excluded from
          ``mean_class_accuracy``);
        * ``per_class``: ``{name: {support, predicted, accuracy, recall, precision, f1}}``
          where ``accuracy`` is the per-class accuracy, identical to ``recall``;
        * ``confusion``: the confusion matrix as a list of lists (rows = true class).

    Raises:
        MetricsError: on empty input, mismatched lengths, non-integer or out-of-range
            labels, or duplicate class names.
    """
    k = len(class_names)
    if k < 1:
        raise MetricsError("class_names is empty; pass one name per class.")
    t = _as_labels(y_true, "y_true", k)
    p = _as_labels(y_pred, "y_pred", k)
    _check_pair(t, p)
    return metrics_from_confusion(confusion_matrix(t, p, k), class_names)


def _natural_key(key: Hashable) -> tuple[Any, ...]:
    """Sort key putting numbers first (numerically), then strings in natural order."""
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        return (0, float(key), ())
    parts = re.split(r"(\d+)", str(key))
    return (1, 0.0, tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in parts))


def _plain(key: Any) -> Any:
    """Convert numpy scalars to the matching built-in type (for JSON and dict keys)."""
    return key.item() if isinstance(key, np.generic) else key


def group_accuracy(
    y_true: Any, y_pred: Any, groups: Sequence[str | int | None]
) -> dict[str | int, dict[str, Any]]:
    """Accuracy within each group of samples, e.g. per head-pose bin.

    Args:
        y_true: true class indices, shape ``(N,)``.
        y_pred: predicted class indices, shape ``(N,)``.
        groups: the group of each sample (a name or number); samples whose group is
            ``None`` are skipped.

    Returns:
        ``{group: {"n": count, "accuracy": fraction correct}}``, ordered with numeric
        groups first (ascending) and string groups in natural order ("pose15" before
        "pose30" before "pose45"). Empty when every group is ``None``.

    Raises:
        MetricsError: on mismatched lengths or non-integer labels.
    """
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        _check_pair(t, p)
    group_list = [_plain(g) for g in groups]
    if len(group_list) != t.shape[0]:
        raise MetricsError(
            f"groups has {len(group_list)} entries but there are {t.shape[0]} labels; "
            "give one group (or None) per sample."
        )
    correct: dict[Any, int] = {}
    count: dict[Any, int] = {}
    for g, ok in zip(group_list, (t == p).tolist()):
        if g is None:
            continue
        count[g] = count.get(g, 0) + 1
        correct[g] = correct.get(g, 0) + int(ok)
    return {
        g: {"n": count[g], "accuracy": correct[g] / count[g]}
        for g in sorted(count, key=_natural_key)
    }


def _is_percent_column(column: str) -> bool:
    """Whether a column name denotes an accuracy (``accuracy``, ``val_acc``, ``acc@1``)."""
    tokens = re.split(r"[^a-z0-9]+", column.lower())
    return any(t in ("acc", "accuracy") or t.endswith("accuracy") for t in tokens)


def _format_cell(value: Any, percent: bool) -> str:
    """Render one table cell."""
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if percent:
            if isinstance(value, float) and math.isnan(value):
                return "nan"
            return f"{100.0 * value:.2f}"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)
    return str(value)


def format_table(
    rows: list[dict[str, Any]],
    columns: list[str],
    percent_columns: Iterable[str] | None = None,
) -> str:
    """Render rows as a plain-text table with aligned columns.

    Accuracy columns hold fractions in [0, 1] and are shown as percentages with two
    decimals (``0.8765`` -> ``87.65``); their header gets a ``" (%)"`` suffix. Other floats
    are shown with four decimals, missing values and ``None`` as ``-``. Numeric columns are
    right-aligned, text columns left-aligned.

    Args:
        rows: one dict per row; keys not in ``columns`` are ignored.
        columns: the keys to show, in order; they are also the headers.
        percent_columns: the columns to show as percentages; by default every column
            whose name contains the word ``acc`` or ``accuracy`` (``accuracy``,
            ``val_accuracy``, ``mean_class_accuracy``, ``acc@1``).

    Returns:
        The table as one string: header, a dashed rule, then one line per row, without a
        trailing newline.
    """
    if percent_columns is None:
        percent = {c for c in columns if _is_percent_column(c)}
    else:
        percent = set(percent_columns)
    headers = [f"{c} (%)" if c in percent else c for c in columns]
    cells = [[_format_cell(row.get(c), c in percent) for c in columns] for row in rows]
    numeric = []
    for c in columns:
        values = [_plain(row.get(c)) for row in rows if row.get(c) is not None]
        numeric.append(
            bool(values)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        )
    widths = [
        max([len(headers[j])] + [len(r[j]) for r in cells]) for j in range(len(columns))
    ]

    def line(parts: list[str]) -> str:
        out = [
            s.rjust(widths[j]) if numeric[j] else s.ljust(widths[j])
            for j, s in enumerate(parts)
        ]
        return "  ".join(out).rstrip()

    lines = [line(headers), "  ".join("-" * w for w in widths)]
    lines.extend(line(r) for r in cells)
    return "\n".join(lines)
