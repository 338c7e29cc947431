"""HTTP service: ``robustfer serve`` (FastAPI + uvicorn; ``pip install robustfer[serve]``).

Endpoints:

* ``GET /health`` -> ``{"status": "ok", "model": ..., "classes": [...], "detector": ...}``
* ``POST /predict`` (multipart form, field ``file``: an image; optional query ``detect=false``
  to classify the whole image as one face) -> ``{"width", "height", "faces": [FaceResult...]}``

Limits and errors: an upload larger than ``max_upload_bytes`` gets 413 (checked from the
``Content-Length`` header before the body is read, and again while reading); an image over
``max_pixels`` or that cannot be decoded gets 422 with the reason; a request without a ``file``
field gets 422 from FastAPI's validation. Requests are served concurrently; the recognizer is
shared and guarded by a lock (OpenCV's cascade classifier is not documented as thread-safe),
so on a 2-core machine requests queue rather than compete for the cores.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at run
# time, and UploadFile is imported inside create_app.
import threading
from typing import Any

from robustfer.errors import ConfigError, ImageError


def create_app(recognizer: Any, max_upload_bytes: int = 10 * 1024 * 1024) -> Any:
    """The FastAPI application serving ``recognizer``."""
    try:
        from fastapi import FastAPI, File, HTTPException, Request, UploadFile
        from fastapi.responses import JSONResponse
    except ImportError:
        raise ConfigError("the web service needs FastAPI: pip install 'robustfer[serve]'.") from None
    import importlib.util

    if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
        raise ConfigError("the web service needs python-multipart: pip install 'robustfer[serve]'.")

    from robustfer._version import __version__

    app = FastAPI(title="robustfer", version=__version__,
                  description="Facial expression recognition robust to pose and occlusion.")
    lock = threading.Lock()
    limit_mb = max_upload_bytes / (1024 * 1024)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        n = request.headers.get("content-length")
        if n is not None and n.isdigit() and int(n) > max_upload_bytes + 64 * 1024:
            return JSONResponse(status_code=413, content={
                "detail": f"upload of {int(n) / 1048576:.1f} MB is over the {limit_mb:.1f} MB limit; "
                          "send a smaller (downscaled or recompressed) image."})
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "model": recognizer.source,
                "classes": list(recognizer.class_names), "detector": str(recognizer._detector_spec),
                "max_upload_bytes": max_upload_bytes}

    @app.post("/predict")
    def predict(file: UploadFile = File(...), detect: bool = True) -> dict[str, Any]:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload is over the {limit_mb:.1f} MB limit; send a smaller image.")
        if not data:
            raise HTTPException(422, "the uploaded file is empty (0 bytes).")
        try:
            with lock:
                res = recognizer.predict_batch([data], detect=detect, names=[file.filename or "upload"])[0]
        except ImageError as e:  # pragma: no cover - predict_batch reports errors in the result
            raise HTTPException(422, str(e)) from None
        if res.error:
            raise HTTPException(422, res.error.replace("the uploaded image", f"{file.filename!r}"))
        return {"filename": file.filename, "width": res.width, "height": res.height,
                "faces": [f.to_dict() for f in res.faces]}

    return app


def serve(recognizer: Any, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = 10 * 1024 * 1024) -> None:
    """Run the service with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("the web service needs uvicorn: pip install 'robustfer[serve]'.") from None
    app = create_app(recognizer, max_upload_bytes)
    uvicorn.run(app, host=host, port=port, log_level="info")
