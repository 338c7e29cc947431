"""Inference: face detection, alignment, head pose, the Recognizer API, drawing, media input."""

from robustfer.inference.detect import (
    Detection,
    DlibDetector,
    FaceDetector,
    HaarDetector,
    YuNetDetector,
    create_detector,
)
from robustfer.inference.io import iter_video, load_image, open_stream
from robustfer.inference.pose import HeadPose, estimate_pose
from robustfer.inference.track import FaceTracker, TrackSummary
from robustfer.inference.recognizer import (
    FaceResult,
    ImageResult,
    Recognizer,
    to_dataframe,
    to_json,
    to_records,
)

__all__ = [
    "Detection", "DlibDetector", "FaceDetector", "FaceResult", "FaceTracker", "HaarDetector", "HeadPose",
    "ImageResult", "Recognizer", "TrackSummary", "YuNetDetector", "create_detector", "estimate_pose",
    "iter_video", "load_image", "open_stream", "to_dataframe", "to_json", "to_records",
]
