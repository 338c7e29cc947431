"""Web service and web page: ``robustfer serve`` (FastAPI + uvicorn; ``pip install robustfer[serve]``).

Open http://127.0.0.1:8000/ for the page: drop photos, start the webcam or upload a video, and
see each face's box, landmarks, head pose and expression probabilities. Everything the page
needs ships in the package (``robustfer/serve/web/``); nothing is fetched from the internet.

Endpoints (``/openapi.json`` describes every field; ``/docs`` is a local page listing them):

* ``GET /`` the page; ``GET /docs`` the API reference; ``GET /samples/NAME`` the bundled photos.
* ``GET /health`` -> status, version, the default model's name (a shipped name or a
  checkpoint's file name, never a path), the models and detectors a request may choose, the
  class names and the limits below.
* ``POST /predict`` (multipart field ``file``) -> the faces of one image. Query ``detect=false``
  classifies the whole image as one face crop.
* ``POST /predict/batch`` (multipart fields ``files``, several) -> one result per file, in
  order; a file that cannot be read gets its own ``error`` and the others are unaffected.
* ``POST /predict/video`` (multipart field ``file``) -> the faces of each analysed frame with a
  ``track_id``, and one summary per track. Query ``stride`` (every N-th frame) and ``smooth``
  (EMA factor in [0, 1) for each track's probabilities).
* ``WS /ws/stream`` (query ``smooth``): send each webcam frame as a binary message (JPEG or PNG
  bytes); each gets one JSON reply with the frame's tracked faces. One tracker per connection.
  A frame that arrives while the server is at capacity is answered ``busy: true`` at once and
  dropped, never queued.

Every endpoint takes ``model`` (one of ``/health``'s ``models``: the served model or a shipped
one, loaded on first use) and ``detector`` (``blazeface``, ``blazeface:fast``,
``blazeface:thorough``, ``haar``, or the served one). Errors answer ``{"detail": message}``: the
message says what was wrong and what to do.

Limits (:func:`create_app` keyword / ``robustfer serve`` option, default):

* ``max_upload_bytes`` / ``--max-upload-mb`` (10 MB): one image; larger -> 413, from the
  ``Content-Length`` header before the body is read, or while reading a chunked body. A batch
  request may carry ``max_batch_files`` / ``--max-batch-files`` (16) such files.
* ``max_pixels`` / ``--max-megapixels`` (40 MP): width x height, read from the image header
  before the image is decoded (a pixel bomb is refused without decoding) -> 422.
* ``max_video_bytes`` / ``--max-video-mb`` (100 MB) -> 413; ``max_video_frames`` /
  ``--max-video-frames`` (300 analysed frames) and ``max_video_seconds`` /
  ``--max-video-seconds`` (120 s): a longer video is analysed up to the limit and answered with
  ``truncated: true`` and a note.
* ``timeout_s`` / ``--timeout`` (60 s): a request that has not finished, queueing included, is
  answered 504 (its inference still finishes in the background and holds its worker).
* ``body_timeout_s`` / ``--body-timeout`` (30 s): a request body that has not fully arrived this
  long after the request started is answered 408, so slow or stalled uploads (slowloris) do not
  hold connections for ever.
* ``workers`` / ``--workers`` (one per CPU core): inferences that run at once, each in its own
  thread with its own face detector (the classifier, thread-safe, is shared); ``queue`` /
  ``--queue`` (16): requests that may wait for a worker. Beyond ``workers + queue`` a request is
  answered 503 with a ``Retry-After`` header at once, so a burst costs no unbounded memory.
* ``--graceful-shutdown`` (10 s): on Ctrl-C or SIGTERM, in-flight requests get this long to
  finish (uvicorn's ``timeout_graceful_shutdown``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from robustfer.errors import ConfigError

__all__ = ["create_app", "serve"]


def _require() -> None:
    if importlib.util.find_spec("fastapi") is None:
        raise ConfigError("the web service needs FastAPI: pip install 'robustfer[serve]'.")
    if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
        raise ConfigError("the web service needs python-multipart: pip install 'robustfer[serve]'.")


def create_app(recognizer: Any, max_upload_bytes: int = 10 * 1024 * 1024, *,
               model_loader: Callable[[str], Any] | None = None, model_name: str | None = None,
               **limits: Any) -> Any:
    """The FastAPI application serving ``recognizer``.

    Args:
        recognizer: the default model (a :class:`~robustfer.inference.recognizer.Recognizer`).
        max_upload_bytes: largest image upload.
        model_loader: name -> Recognizer for the other shipped models a request may choose
            (default ``Recognizer.from_pretrained(name)``).
        model_name: the default model's name in ``/health`` (default: the shipped model's name
            or the checkpoint's file name).
        **limits: ``max_pixels``, ``max_batch_files``, ``max_video_bytes``,
            ``max_video_frames``, ``max_video_seconds``, ``timeout_s``, ``body_timeout_s``, ``workers`` (0 = one
            per CPU core) and ``queue``; see the module docstring.

    Raises:
        ConfigError: FastAPI or python-multipart is missing, or a limit is unknown or invalid.
    """
    _require()
    from dataclasses import fields

    from robustfer.serve.app import Limits, build_app

    known = {f.name for f in fields(Limits)}
    unknown = sorted(set(limits) - known)
    if unknown:
        raise ConfigError(f"unknown limit(s) {unknown}; the limits are {sorted(known - {'max_upload_bytes'})}.")
    lim = Limits(max_upload_bytes=max_upload_bytes, **limits)
    bad = [k for k in known if getattr(lim, k) < 0 or (getattr(lim, k) == 0 and k not in ("workers", "queue"))]
    if bad:
        raise ConfigError(f"limit(s) {sorted(bad)} must be positive (workers and queue may be 0).")
    return build_app(recognizer, lim, model_loader, model_name)


def serve(recognizer: Any, host: str = "127.0.0.1", port: int = 8000, graceful_shutdown_s: float = 10.0,
          **options: Any) -> None:
    """Run the service with uvicorn until interrupted; ``options`` go to :func:`create_app`."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("the web service needs uvicorn: pip install 'robustfer[serve]'.") from None
    app = create_app(recognizer, **options)
    if not (importlib.util.find_spec("websockets") or importlib.util.find_spec("wsproto")):
        print("robustfer serve: the webcam stream (/ws/stream) needs websockets: "
              "pip install 'robustfer[serve]'.", file=sys.stderr)
    limits = app.state.limits
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=graceful_shutdown_s,
                ws_max_size=limits.max_upload_bytes + 64 * 1024)
