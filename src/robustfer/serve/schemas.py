"""The web service's response types: what ``/openapi.json`` describes, field by field.

They mirror the library's own JSON (:meth:`FaceResult.to_dict`, :meth:`ImageResult.to_dict`,
:meth:`TrackSummary.to_dict`), so a client reads the same fields from the service, from
``robustfer predict -o out.jsonl`` and from the Python API.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PoseOut(BaseModel):
    """Head pose of a face in degrees (signs as in robustfer.inference.pose)."""

    yaw: float | None = Field(description="> 0: the subject turned to their right (nose to the image's left); "
                                          "null when the detector cannot measure it (haar)")
    pitch: float | None = Field(description="> 0: head tilted up")
    roll: float | None = Field(description="> 0: head tilted towards the subject's left shoulder "
                                           "(clockwise in the image)")
    yaw_bin: int | None = Field(description="nearest of the yaw bins -90, -45, 0, 45, 90 degrees, "
                                            "as an index 0..4")
    yaw_bin_name: str | None = Field(description="the bin's name: frontal, half_left, ...")
    method: str = Field(description="face-mesh, landmarks, detector-view or none (whole-image mode)")


class FaceOut(BaseModel):
    """One face: where it is, its head pose and its expression probabilities."""

    track_id: int | None = Field(None, description="the face's track (video, webcam stream); null for photos")
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the uploaded image", min_length=4,
                             max_length=4)
    score: float = Field(description="detection score in [0, 1] (1 in whole-image mode)")
    expression: str = Field(description="the most probable expression")
    confidence: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="expression -> probability, in the model's class order "
                                                        "(smoothed over frames when smooth > 0)")
    pose: PoseOut
    landmarks: list[list[float | None]] | None = Field(
        description="5 points (x, y): right eye, left eye, nose, right and left mouth corner; "
                    "null coordinates where the detector gives none; null without landmarks")
    crop: str = Field(description="how the face crop was cut: mesh, aligned, box or whole-image")
    raw_probabilities: dict[str, float] | None = Field(
        None, description="this frame's own probabilities when smooth > 0 (video, stream)")


class ImageOut(BaseModel):
    """The faces of one uploaded image (or, in a batch, why it failed)."""

    filename: str | None = Field(description="the upload's file name")
    width: int | None = Field(description="image width in pixels (null when it could not be read)")
    height: int | None = Field(description="image height in pixels")
    faces: list[FaceOut] = Field(description="faces found, best detection first; empty when none")
    error: str | None = Field(None, description="batch only: why this file failed (the others are unaffected)")
    model: str = Field(description="the model that classified the faces")
    detector: str = Field(description="the face detector used")
    time_ms: float | None = Field(None, description="inference time in milliseconds, queueing excluded")


class BatchOut(BaseModel):
    """One result per uploaded file, in upload order."""

    results: list[ImageOut]
    ok: int = Field(description="files that were read (with or without faces)")
    failed: int = Field(description="files with an error entry")


class TrackOut(BaseModel):
    """One face followed through a video or stream."""

    track_id: int
    frames: int = Field(description="frames the face was seen in")
    first_frame: int
    last_frame: int
    first_time_s: float | None
    last_time_s: float | None
    mean_probabilities: dict[str, float] = Field(description="raw probabilities averaged over its frames")
    dominant_expression: str
    yaw_range: list[float] | None = Field(description="min, max yaw over its frames (degrees)")
    pitch_range: list[float] | None
    roll_range: list[float] | None


class FrameOut(BaseModel):
    """The tracked faces of one video or stream frame."""

    frame: int = Field(description="index of the frame in the video (stream: in the connection)")
    time_s: float | None = Field(description="its time in seconds (stream: since the connection opened)")
    width: int | None
    height: int | None
    faces: list[FaceOut]
    error: str | None = Field(None, description="why this frame could not be read (the video goes on)")


class VideoOut(BaseModel):
    """Per-frame tracked faces and one summary per track."""

    filename: str | None
    model: str
    detector: str
    stride: int = Field(description="every stride-th frame was analysed")
    frames: list[FrameOut]
    tracks: list[TrackOut]
    truncated: bool = Field(description="the video went on past the frame or duration limit; only its start "
                                        "was analysed")
    note: str | None = Field(None, description="what to do when truncated")
    time_ms: float | None = None


class StreamOut(FrameOut):
    """The reply to one WebSocket frame (/ws/stream); busy frames were dropped, not queued."""

    busy: bool = Field(False, description="the server was at capacity and dropped this frame; send the next")
    time_ms: float | None = None


class LimitsOut(BaseModel):
    """The limits this server enforces (see robustfer serve --help)."""

    max_upload_bytes: int = Field(description="largest image upload (413 above)")
    max_pixels: int = Field(description="largest image, width x height, checked from its header (422 above)")
    max_batch_files: int = Field(description="most files in one /predict/batch request")
    max_video_bytes: int = Field(description="largest video upload (413 above)")
    max_video_frames: int = Field(description="most frames analysed per video (after the stride)")
    max_video_seconds: float = Field(description="longest stretch of video analysed, in seconds")
    timeout_s: float = Field(description="per request, queueing included (504 above)")
    body_timeout_s: float = Field(description="to receive a request's whole body (408 above)")
    workers: int = Field(description="inferences run at once")
    queue: int = Field(description="requests that may wait for a worker (503 with Retry-After beyond)")


class HealthOut(BaseModel):
    """What the server runs and its limits."""

    status: str = Field(description="ok")
    version: str = Field(description="robustfer version")
    model: str = Field(description="the default model: a shipped name or a checkpoint's file name")
    models: list[str] = Field(description="values the model query parameter accepts")
    classes: list[str] = Field(description="expression names of the default model, in output order")
    detector: str = Field(description="the default face detector")
    detectors: list[str] = Field(description="values the detector query parameter accepts")
    samples: list[str] = Field(description="bundled sample photos, served at /samples/NAME")
    limits: LimitsOut


class ErrorOut(BaseModel):
    """An error: what was wrong and what to do."""

    detail: str
