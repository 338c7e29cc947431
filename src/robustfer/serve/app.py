"""The FastAPI application; :mod:`robustfer.serve` documents its endpoints and limits."""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time.
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse

from robustfer._version import __version__
from robustfer.errors import ImageError, RobustferError
from robustfer.inference.io import VIDEO_EXTENSIONS
from robustfer.serve.schemas import BatchOut, ErrorOut, HealthOut, ImageOut, StreamOut, VideoOut
from robustfer.serve.workers import DETECTOR_CHOICES, Busy, InferencePool, Models, detector_label

WEB = Path(str(files("robustfer.serve") / "web"))
MB = 1024 * 1024
#: Room for the multipart envelope around a file (headers, boundaries).
ENVELOPE = 64 * 1024
#: Files the page needs, served from the package: URL path -> (file in WEB, media type).
PAGE_FILES = {"/": ("index.html", "text/html"), "/docs": ("docs.html", "text/html"),
              "/static/app.js": ("app.js", "text/javascript"), "/static/style.css": ("style.css", "text/css")}
SAMPLE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@dataclass(frozen=True)
class Limits:
    """What one request may cost; see :mod:`robustfer.serve`."""

    max_upload_bytes: int = 10 * MB
    max_pixels: int = 40_000_000
    max_batch_files: int = 16
    max_video_bytes: int = 100 * MB
    max_video_frames: int = 300
    max_video_seconds: float = 120.0
    timeout_s: float = 60.0
    body_timeout_s: float = 30.0
    workers: int = 0  # 0: one per CPU core
    queue: int = 16

    def body_limit(self, path: str) -> tuple[int, int]:
        """The largest request body on ``path``, and the limit a client is told about."""
        if path == "/predict/batch":
            n = self.max_batch_files
            return (self.max_upload_bytes + ENVELOPE) * n, self.max_upload_bytes * n
        if path == "/predict/video":
            return self.max_video_bytes + ENVELOPE, self.max_video_bytes
        return self.max_upload_bytes + ENVELOPE, self.max_upload_bytes


def _too_large(n: float | None, limit: float, path: str) -> str:
    what = ("send a shorter or more compressed video, or a larger --max-video-mb to the server"
            if path == "/predict/video" else "send a smaller (downscaled or recompressed) image"
            + (", or fewer files per request" if path == "/predict/batch" else ""))
    size = "" if n is None else f" of {n / MB:.1f} MB"
    return f"upload{size} is over the {limit / MB:.1f} MB limit; {what}."


class BodyLimit:
    """ASGI middleware: 413 for a request body over :meth:`Limits.body_limit`, from the
    ``Content-Length`` header before the body is read, or while it is read (chunked uploads);
    408 for a body that has not fully arrived ``body_timeout_s`` after the request started."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit, told = self.limits.body_limit(path)
        n = dict(scope["headers"]).get(b"content-length", b"")
        if n.isdigit() and int(n) > limit:
            response = JSONResponse({"detail": _too_large(int(n), told, path)}, status_code=413)
            return await response(scope, receive, send)
        seen = 0
        deadline = asyncio.get_running_loop().time() + self.limits.body_timeout_s

        async def counted() -> dict:
            nonlocal seen
            left = deadline - asyncio.get_running_loop().time()
            try:  # a body trickling in (slowloris) must not hold a connection for ever
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.limits.body_timeout_s:g} s "
                                         "(limit --body-timeout); send it at once, or from a faster link.") from None
            seen += len(message.get("body", b""))
            if seen > limit:  # FastAPI passes an HTTPException from the body on unchanged
                raise HTTPException(413, _too_large(None, told, path))
            return message

        await self.app(scope, counted, send)


# ----------------------------------------------------------------------------- jobs (worker threads)
def _image_out(res: Any, filename: str | None, model: str, detector: str, ms: float | None) -> dict:
    error = None if res.error is None else res.error.replace("the uploaded image", repr(filename)).replace(
        "pass a larger max_pixels", "start the server with a larger --max-megapixels")
    return {"filename": filename, "width": res.width, "height": res.height, "error": error,
            "faces": [f.to_dict() for f in res.faces], "model": model, "detector": detector,
            "time_ms": None if ms is None else round(ms, 1)}


def _job_images(rec: Any, uploads: list[tuple[str, bytes]], detect: bool) -> list[tuple[Any, float]]:
    """Each upload alone, so at most one decoded image per worker is in memory."""
    out = []
    for name, data in uploads:
        t = time.perf_counter()
        res = rec.predict_batch([data], detect=detect, names=[name])[0]
        out.append((res, (time.perf_counter() - t) * 1000))
    return out


def _job_video(rec: Any, path: str, stride: int, smooth: float, limits: Limits) -> dict:
    from robustfer.inference.io import iter_video
    from robustfer.inference.track import FaceTracker

    tracker = FaceTracker(smoothing=smooth)
    truncated = False

    def bounded() -> Any:
        nonlocal truncated
        for n, fr in enumerate(iter_video(path, stride, max_pixels=limits.max_pixels)):
            if n >= limits.max_video_frames or fr.time_s > limits.max_video_seconds:  # NaN time: no clock
                truncated = True
                return
            yield fr

    frames = [r.to_dict() for r in rec.track(bounded(), tracker)]
    return {"frames": frames, "tracks": [s.to_dict() for s in tracker.summaries()], "truncated": truncated}


def _job_frame(rec: Any, tracker: Any, data: bytes, index: int, t: float, max_pixels: int) -> dict:
    from robustfer.inference.io import Frame, load_image

    try:
        image = load_image(data, max_pixels=max_pixels)
    except ImageError as e:
        return {"frame": index, "time_s": t, "width": None, "height": None, "faces": [],
                "error": str(e).replace("the uploaded image", "the frame")}
    return next(iter(rec.track([Frame(index, t, image)], tracker))).to_dict()


# ----------------------------------------------------------------------------- the app
def build_app(recognizer: Any, limits: Limits, model_loader: Callable[[str], Any] | None = None,
              model_name: str | None = None) -> FastAPI:
    """The application (:func:`robustfer.serve.create_app` checks the dependencies first)."""
    from robustfer.inference.track import FaceTracker

    workers = limits.workers or os.cpu_count() or 1
    limits = Limits(**{**asdict(limits), "workers": workers})
    models = Models(recognizer, model_loader, model_name)
    served = getattr(recognizer, "_detector_spec", "blazeface")
    detectors: dict[str, Any] = {d: d for d in DETECTOR_CHOICES}
    default_detector = detector_label(served)
    detectors.setdefault(default_detector, served)
    pool = InferencePool(models, workers, limits.queue, detectors, limits.max_pixels)
    samples = {p.name: p for p in sorted((WEB / "samples").glob("*")) if p.suffix.lower() in SAMPLE_TYPES}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        pool.shutdown()  # uvicorn has let in-flight requests finish (timeout_graceful_shutdown)

    app = FastAPI(
        title="robustfer", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
        description="Faces, head pose and facial expressions in photos, videos and webcam streams "
                    "(WebSocket /ws/stream: binary JPEG/PNG frames in, one StreamOut JSON per frame out). "
                    "Every error answers {\"detail\": \"what was wrong and what to do\"}.")
    app.state.pool = pool
    app.state.limits = limits
    app.add_middleware(BodyLimit, limits=limits)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorOut, "description": text} for code, text in [
            (413, "upload over the size limit"),
            (422, "unreadable or too large image, unknown model or detector, missing form field"),
            (503, "every worker busy and the queue full; retry after the Retry-After header's seconds"),
            (504, "the request took longer than the timeout"),
            (500, "the server could not load the model asked for")]}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Any, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 400 and isinstance(detail, str) and "multipart" in detail.lower():
            # the form parser's own messages say what is wrong, not what to do
            detail = (f"{detail.rstrip('.')}: the body is not valid multipart form data; send the file as "
                      "multipart/form-data, e.g. curl -F file=@photo.jpg")
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Any, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query")]
            where = ".".join(loc) or "request"
            if e.get("type") == "missing" and e.get("loc", ("",))[0] == "body":
                parts.append(f"form field {where!r} is missing: send the file as multipart form data, "
                             f"e.g. curl -F {where}=@photo.jpg")
            else:
                parts.append(f"{where}: {e.get('msg')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    def choose(model: str | None, detector: str | None) -> tuple[str, str]:
        try:
            name = models.check(model)
        except RobustferError as e:
            raise HTTPException(422, str(e)) from None
        det = detector or default_detector
        if det not in detectors:
            raise HTTPException(422, f"unknown detector {det!r}; choose one of {list(detectors)}.")
        return name, det

    async def run(fn: Callable[..., Any], model: str, detector: str, *args: Any,
                  cleanup: Callable[[], None] | None = None) -> Any:
        try:
            fut: Future = pool.submit(fn, model, detector, *args)
        except Busy:
            if cleanup:
                cleanup()
            raise HTTPException(503, f"the server is busy ({limits.workers} inference(s) running, "
                                     f"{limits.queue} waiting); retry in a second.",
                                headers={"Retry-After": "1"}) from None
        if cleanup:
            fut.add_done_callback(lambda _: cleanup())  # after the job, even one that outlives a 504
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), limits.timeout_s)
        except TimeoutError:
            raise HTTPException(504, f"the request took over {limits.timeout_s:g} s, the server's timeout; "
                                     "send a smaller image or video (or fewer files), or retry when the "
                                     "server is less busy.") from None
        except ImageError as e:
            raise HTTPException(422, str(e)) from None
        except RobustferError as e:  # e.g. a shipped model missing from this install
            raise HTTPException(500, str(e)) from None

    async def read(file: UploadFile) -> tuple[bytes, int, str | None]:
        """The upload's bytes, or the status and message that refuse it."""
        limit = limits.max_upload_bytes
        data = await file.read(limit + 1)
        if len(data) > limit:
            return b"", 413, (f"{file.filename!r} is over the {limit / MB:.1f} MB limit; send a smaller "
                              "(downscaled or recompressed) image.")
        if not data:
            return b"", 422, (f"{file.filename!r}: the uploaded file is empty (0 bytes); send the image's "
                              "bytes in the form field.")
        return data, 200, None

    model_q = Query(None, description=f"model to use, one of GET /health's models (default: {models.default})")
    detector_q = Query(None, description=f"face detector, one of {list(detectors)} "
                                         f"(default: {default_detector})")
    detect_q = Query(True, description="false: the image is one face crop, classify it whole")

    @app.get("/health", response_model=HealthOut, summary="Status, model, classes and limits")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "model": models.default, "models": models.names,
                "classes": list(getattr(recognizer, "class_names", ())), "detector": default_detector,
                "detectors": list(detectors), "samples": list(samples), "limits": asdict(limits)}

    @app.post("/predict", response_model=ImageOut, responses=errors, summary="Faces in one image")
    async def predict(file: UploadFile = File(..., description="a JPEG, PNG, BMP, GIF, TIFF or WebP image"),
                      detect: bool = detect_q, model: str | None = model_q,
                      detector: str | None = detector_q) -> dict[str, Any]:
        name, det = choose(model, detector)
        data, status, error = await read(file)
        if error:
            raise HTTPException(status, error)
        [(res, ms)] = await run(_job_images, name, det, [(file.filename or "upload", data)], detect)
        out = _image_out(res, file.filename, name, det, ms)
        if out["error"]:
            raise HTTPException(422, out["error"])
        return out

    @app.post("/predict/batch", response_model=BatchOut, responses=errors,
              summary="Faces in several images; a bad file gets its own error entry")
    async def predict_batch(files: list[UploadFile] = File(..., description="images, each as a 'files' field"),
                            detect: bool = detect_q, model: str | None = model_q,
                            detector: str | None = detector_q) -> dict[str, Any]:
        name, det = choose(model, detector)
        if len(files) > limits.max_batch_files:
            raise HTTPException(422, f"{len(files)} files is over the limit of {limits.max_batch_files} per "
                                     "request; split them over several requests.")
        read_files = [(f.filename, *(await read(f))) for f in files]
        good = [(fn or f"file {i}", data) for i, (fn, data, _, err) in enumerate(read_files) if err is None]
        done = iter(await run(_job_images, name, det, good, detect) if good else [])
        results = []
        for fn, _, _, err in read_files:
            if err is None:
                res, ms = next(done)
                results.append(_image_out(res, fn, name, det, ms))
            else:
                results.append({"filename": fn, "width": None, "height": None, "faces": [], "error": err,
                                "model": name, "detector": det})
        failed = sum(r["error"] is not None for r in results)
        return {"results": results, "ok": len(results) - failed, "failed": failed}

    @app.post("/predict/video", response_model=VideoOut, responses=errors,
              summary="Faces tracked through a video")
    async def predict_video(
            file: UploadFile = File(..., description="a video file (MP4, AVI, MOV, MKV, WebM ...)"),
            stride: int = Query(1, ge=1, le=1000, description="analyse every stride-th frame"),
            smooth: float = Query(0.0, ge=0.0, lt=1.0, description="EMA factor for each track's probabilities "
                                                                    "(0 = raw, e.g. 0.6)"),
            model: str | None = model_q, detector: str | None = detector_q) -> dict[str, Any]:
        name, det = choose(model, detector)
        suffix = Path(file.filename or "").suffix.lower()
        fd, path = tempfile.mkstemp(prefix="robustfer-video-",
                                    suffix=suffix if suffix in VIDEO_EXTENSIONS else "")
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := await file.read(MB):
                    size += len(chunk)
                    if size > limits.max_video_bytes:
                        raise HTTPException(413, _too_large(None, limits.max_video_bytes, "/predict/video"))
                    out.write(chunk)
            if size == 0:
                raise HTTPException(422, f"{file.filename!r}: the uploaded file is empty (0 bytes); send the "
                                         "video's bytes in the form field 'file'.")
        except BaseException:
            os.unlink(path)
            raise
        t = time.perf_counter()
        try:
            res = await run(_job_video, name, det, path, stride, smooth, limits,
                            cleanup=lambda: Path(path).unlink(missing_ok=True))
        except HTTPException as e:  # the message names the temporary file: name the upload instead
            e.detail = str(e.detail).replace(path, repr(file.filename))
            raise
        note = None
        if res["truncated"]:
            note = (f"only the first {len(res['frames'])} analysed frames (limits: "
                    f"{limits.max_video_frames} frames, {limits.max_video_seconds:g} s) were used; "
                    "raise the stride or send a shorter clip.")
        return {"filename": file.filename, "model": name, "detector": det, "stride": stride, **res,
                "note": note, "time_ms": round((time.perf_counter() - t) * 1000, 1)}

    @app.websocket("/ws/stream")
    async def stream(ws: WebSocket, model: str | None = None, detector: str | None = None,
                     smooth: float = 0.0) -> None:
        """Webcam frames in (binary JPEG/PNG messages), tracked faces out (one JSON per frame)."""
        await ws.accept()
        try:
            name, det = choose(model, detector)
            tracker = FaceTracker(smoothing=smooth)
        except (HTTPException, RobustferError) as e:
            await ws.send_json({"error": str(getattr(e, "detail", e))})
            await ws.close(code=1008)
            return
        t0, index, last = time.monotonic(), 0, None
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data, t = message.get("bytes"), round(time.monotonic() - t0, 3)
                reply: dict[str, Any] = {"frame": index, "time_s": t, "width": None, "height": None,
                                         "faces": []}
                if data is None:
                    reply["error"] = "send each frame as a binary message: the bytes of a JPEG or PNG image."
                elif len(data) > limits.max_upload_bytes:
                    reply["error"] = (f"frame of {len(data) / MB:.1f} MB is over the "
                                      f"{limits.max_upload_bytes / MB:.1f} MB limit; send smaller frames.")
                elif last is not None and not last.done():  # the previous frame outlived its timeout
                    reply["busy"] = True
                else:
                    try:
                        start = time.perf_counter()
                        last = pool.submit(_job_frame, name, det, tracker, data, index, t, limits.max_pixels)
                        reply = await asyncio.wait_for(asyncio.wrap_future(last), limits.timeout_s)
                        reply["time_ms"] = round((time.perf_counter() - start) * 1000, 1)
                    except Busy:
                        reply["busy"] = True
                    except TimeoutError:
                        reply["error"] = f"the frame took over {limits.timeout_s:g} s, the server's timeout."
                index += 1
                await ws.send_json(StreamOut.model_validate(reply).model_dump(mode="json"))
        except WebSocketDisconnect:
            pass

    def openapi() -> dict[str, Any]:  # FastAPI's schema plus the WebSocket's reply type
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
            stream_schema = StreamOut.model_json_schema(ref_template="#/components/schemas/{model}")
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for k, v in {**stream_schema.pop("$defs", {}), "StreamOut": stream_schema}.items():
                components.setdefault(k, v)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    for route, (filename, media) in PAGE_FILES.items():
        app.add_api_route(route, _file_endpoint(WEB / filename, media), methods=["GET"],
                          include_in_schema=False)

    @app.get("/samples/{name}", include_in_schema=False)
    def sample(name: str) -> FileResponse:
        if name not in samples:
            raise HTTPException(404, f"no sample {name!r}; the samples are {list(samples)}.")
        return FileResponse(samples[name], media_type=SAMPLE_TYPES[samples[name].suffix.lower()])

    return app


def _file_endpoint(path: Path, media: str) -> Callable[[], FileResponse]:
    def endpoint() -> FileResponse:
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    return endpoint
