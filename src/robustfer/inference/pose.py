"""Head pose per face: yaw, pitch and roll from the face mesh or 5 landmarks, or a coarse yaw bin.

The default detector (:mod:`robustfer.inference.blazeface`) measures pose from its 3-D face
mesh (:func:`~robustfer.inference.blazeface.pose_from_mesh`); this module turns those angles
into a :class:`HeadPose`, and covers detectors that give only 5 landmarks or none.

Convention (the same as KDEF's angle codes, :mod:`robustfer.data.kdef`): **yaw > 0 means the
subject turned to their right** (their nose points to the image's left), **pitch > 0 means
the head tilted up**, **roll > 0 means the head tilted towards the subject's left shoulder**
(clockwise in the image). Degrees.

Method with landmarks (eye centres and nose point, as every 5-point detector here gives):

* roll is the angle of the line through the two eyes (exact up to landmark noise);
* after undoing the roll, the nose's offset from the eye midpoint, in units of the eye
  distance, is ``u`` across and ``v`` down. A generic head -- eye centres ``2E`` apart, the
  nose point ``D`` in front of the eye plane and ``V`` below it -- seen under weak perspective
  gives ``u = (D / 2E) tan(yaw)`` and ``v = (V cos(pitch) - D sin(pitch)) / (2E cos(yaw))``,
  which are solved for yaw and pitch. ``D / 2E`` and ``V / 2E`` depend on which nose point the
  detector marks (nose tip for YuNet, the base of the nose for dlib's 5-point model) and are
  taken from the generic 3D face model widely used with OpenCV's solvePnP, not fitted to any
  data here.

Without landmarks (Haar): the cascade that found the face gives a coarse bin -- the frontal
cascade fires up to roughly 30-40 degrees of yaw, the profile cascade on faces turned further --
and yaw/pitch/roll are left unknown (None), never invented.

The yaw bins are those of KDEF and the synthetic set: nearest of -90, -45, 0, 45, 90 degrees.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robustfer.data.pose import YAW_BIN_NAMES, YAW_BINS, yaw_bin
from robustfer.inference.detect import Detection

__all__ = ["NOSE_GEOMETRY", "YAW_BINS", "YAW_BIN_NAMES", "HeadPose", "estimate_pose", "pose_from_landmarks",
           "pose_from_view", "yaw_bin"]

#: (D / 2E, V / 2E) of the generic head per nose point (see the module docstring).
NOSE_GEOMETRY = {"tip": (0.41, 0.55), "base": (0.25, 0.75)}


@dataclass
class HeadPose:
    """Head pose of one face.

    Attributes:
        yaw, pitch, roll: degrees (see the module docstring for signs), or None when the
            method cannot measure them.
        yaw_bin: index into :data:`YAW_BINS` (0..4), or None.
        yaw_bin_name: the bin's name (``"frontal"``, ``"half_left"`` ...), or None.
        method: ``"face-mesh"`` (3-D mesh of the default detector), ``"landmarks"`` (5 points)
            or ``"detector-view"`` (Haar).
    """

    yaw: float | None
    pitch: float | None
    roll: float | None
    yaw_bin: int | None
    yaw_bin_name: str | None
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pose_from_landmarks(landmarks: np.ndarray, nose_point: str = "tip") -> HeadPose:
    """Yaw, pitch and roll from 5 landmarks (image-left eye, image-right eye, nose, ...)."""
    p = np.asarray(landmarks, dtype=np.float64)
    eye_l, eye_r, nose = p[0], p[1], p[2]
    ev = eye_r - eye_l
    iod = float(np.hypot(*ev))
    if not np.isfinite(iod) or iod < 1e-6:
        return HeadPose(None, None, None, None, None, "landmarks")
    # roll: positive = clockwise in the image (right-hand eye lower), i.e. towards the
    # subject's left shoulder.
    roll = math.degrees(math.atan2(ev[1], ev[0]))
    e_hat = ev / iod
    n_hat = np.array([-e_hat[1], e_hat[0]])  # image "down" after undoing the roll
    d = nose - (eye_l + eye_r) / 2
    u, v = float(d @ e_hat) / iod, float(d @ n_hat) / iod
    depth, below = NOSE_GEOMETRY.get(nose_point, NOSE_GEOMETRY["tip"])
    # Nose to the image's left (u < 0) means the subject turned to their right: yaw > 0.
    yaw_r = math.atan2(-u, depth)
    # v cos(yaw) = below cos(pitch) - depth sin(pitch) = R cos(pitch + alpha),
    # R = hypot(below, depth), alpha = atan2(depth, below); pitch = 0 when v cos(yaw) = below.
    arg = max(-1.0, min(1.0, v * math.cos(yaw_r) / math.hypot(below, depth)))
    pitch = math.degrees(math.acos(arg) - math.atan2(depth, below))
    yaw = math.degrees(yaw_r)
    b = yaw_bin(yaw)
    return HeadPose(yaw, pitch, roll, b, YAW_BIN_NAMES[b], "landmarks")


def pose_from_view(view: str) -> HeadPose:
    """Coarse pose from which Haar cascade found the face."""
    b = {"frontal": 2, "profile_left": 0, "profile_right": 4}.get(view)
    if b is None:
        return HeadPose(None, None, None, None, None, "detector-view")
    return HeadPose(None, None, None, b, YAW_BIN_NAMES[b], "detector-view")


def pose_from_angles(yaw: float, pitch: float, roll: float, method: str) -> HeadPose:
    b = yaw_bin(yaw)
    return HeadPose(float(yaw), float(pitch), float(roll), b, YAW_BIN_NAMES[b], method)


def estimate_pose(det: Detection) -> HeadPose:
    """The best pose estimate a detection allows: the face mesh's 3-D pose (the default
    detector), else 5 landmarks, else the Haar view."""
    if det.extra.get("pose") is not None:
        return pose_from_angles(*det.extra["pose"], "face-mesh")
    if det.landmarks is not None and np.isfinite(det.landmarks[:3]).all():  # eyes and nose
        return pose_from_landmarks(det.landmarks, det.extra.get("nose_point", "tip"))
    return pose_from_view(det.view)
