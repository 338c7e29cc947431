"""The head-pose vocabulary and pose-label files, shared by datasets, training and inference.

Yaw bins: nearest of -90, -45, 0, 45, 90 degrees (those of KDEF and the synthetic set), named
``full_left`` ... ``full_right``. Sign convention (as KDEF's angle codes): yaw > 0 means the
subject turned to their right.

Pose-label files: ``robustfer annotate-pose`` writes them, datasets attach them. A CSV with
header ``id,yaw,pitch,roll,yaw_bin,method,landmarks``; ``id`` is the dataset's sample id (for
FERPlus ``FER2013Train/fer0000000.png``), angles in degrees (empty when unknown), ``yaw_bin`` an
index into :data:`YAW_BINS` (empty when no face was found), ``landmarks`` the face's five points
``"x1 y1 ... x5 y5"`` in pixels of the dataset's image (subject's right eye, left eye, nose tip,
right and left mouth corner; empty when no face was found; files written before this column
existed have no ``landmarks`` column). ``FERDataset.attach_pose(read_pose_file(path))`` gives
samples ``pose``/``pose_bin``; in a recipe, ``data.pose_file: PATH`` does it for every dataset of
the run. ``read_landmark_file`` reads the points, and ``data.landmark_file: PATH`` attaches them
(models that crop around landmarks: RAN with ``regions: landmarks``, AHA).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from robustfer.errors import DatasetError

#: Yaw bin centres (degrees) and names, in ``Sample.pose_bin`` order.
YAW_BINS = (-90.0, -45.0, 0.0, 45.0, 90.0)
YAW_BIN_NAMES = ("full_left", "half_left", "frontal", "half_right", "full_right")

#: Columns of a pose-label file.
COLUMNS = ["id", "yaw", "pitch", "roll", "yaw_bin", "method", "landmarks"]


def yaw_bin(yaw: float) -> int:
    """Index of the nearest bin centre in :data:`YAW_BINS`."""
    return int(np.argmin([abs(yaw - b) for b in YAW_BINS]))


def _num(v: str | None) -> float | None:
    if v is None or v == "":
        return None
    return float(v)


def read_pose_file(path: str | Path) -> dict[str, tuple[float | None, int | None]]:
    """``{sample id: (yaw, yaw_bin)}`` from a pose-label file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pose-label file {path} does not exist; write one with "
                           "`robustfer annotate-pose SPEC --out FILE`.")
    out: dict[str, tuple[float | None, int | None]] = {}
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        if r.fieldnames is None or "id" not in r.fieldnames or "yaw_bin" not in r.fieldnames:
            raise DatasetError(f"{path}: expected a CSV header with columns {COLUMNS}, got {r.fieldnames}.")
        for i, row in enumerate(r, start=2):
            try:
                b = _num(row.get("yaw_bin"))
                out[row["id"]] = (_num(row.get("yaw")), None if b is None else int(b))
            except (TypeError, ValueError):
                raise DatasetError(f"{path} line {i}: yaw/yaw_bin must be numbers or empty, got "
                                   f"{row.get('yaw')!r}/{row.get('yaw_bin')!r}.") from None
    return out


def read_landmark_file(path: str | Path) -> dict[str, np.ndarray]:
    """``{sample id: (5, 2) float32 points in pixels of the dataset's image}`` from a pose-label
    file's ``landmarks`` column; images without a found face are absent."""
    from robustfer.data.landmarks import parse_points

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"landmark file {path} does not exist; write one with "
                           "`robustfer annotate-pose SPEC --out FILE` (it writes pose and landmarks).")
    out: dict[str, np.ndarray] = {}
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        if r.fieldnames is None or "id" not in r.fieldnames or "landmarks" not in r.fieldnames:
            raise DatasetError(f"{path}: no 'landmarks' column (header {r.fieldnames}); it was written by "
                               "an older robustfer: write it again with `robustfer annotate-pose SPEC --out FILE`.")
        for i, row in enumerate(r, start=2):
            try:
                pts = parse_points(row.get("landmarks"))
            except ValueError as e:
                raise DatasetError(f"{path} line {i}: {e}") from None
            if pts is None:
                continue
            if pts.shape != (5, 2):
                raise DatasetError(f"{path} line {i}: {len(pts)} landmarks; expected the five points "
                                   "'x1 y1 ... x5 y5' that annotate-pose writes.")
            out[row["id"]] = pts
    return out
