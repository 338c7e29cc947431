"""Inference: face detection, alignment, head pose, the Recognizer API, drawing, media input."""

from robustfer.inference.detect import (
    Detection,
    DlibDetector,
    FaceDetector,
    HaarDetector,
    YuNetDetector,
    create_detector,
)
from robustfer.inference.io import iter_video, load_image
from robustfer.inference.pose import HeadPose, estimate_pose
from robustfer.inference.recognizer import (
    FaceResult,
    ImageResult,
    Recognizer,
    to_dataframe,
    to_json,
    to_records,
)

__all__ = [
    "Detection", "DlibDetector", "FaceDetector", "FaceResult", "HaarDetector", "HeadPose",
    "ImageResult", "Recognizer", "YuNetDetector", "create_detector", "estimate_pose", "iter_video",
    "load_image", "to_dataframe", "to_json", "to_records",
]
