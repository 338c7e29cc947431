"""The web service, tested with a real HTTP client against a server on localhost."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from robustfer import Recognizer  # noqa: E402
from robustfer.inference.recognizer import ImageResult  # noqa: E402
from robustfer.serve import create_app  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
PHOTO = (SAMPLES / "astronaut.jpg").read_bytes()


def _png_header(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression-bomb stand-in)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


LIMIT = 1024 * 1024  # 1 MB upload limit for the test server
VIDEO_FRAMES = 4  # the test server analyses at most 4 frames per video


@pytest.fixture(scope="module")
def server(live_server) -> Iterator[str]:
    app = create_app(Recognizer.from_pretrained("default"), max_upload_bytes=LIMIT,
                     max_video_frames=VIDEO_FRAMES)
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six frames of a photo drifting right by 4 px a frame, 10 frames/s."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(PHOTO, np.uint8), cv2.IMREAD_COLOR)
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    h, w = image.shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for i in range(6):
        out.write(np.roll(image, 4 * i, axis=1))
    out.release()
    assert path.stat().st_size > 0
    return path


def _post(url: str, name: str, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(url + "/predict", files={"file": (name, data, "application/octet-stream")},
                      params=params, timeout=60)


# ----------------------------------------------------------------------------- the typed API
def test_health(server: str) -> None:
    r = httpx.get(server + "/health")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ok" and body["version"]
    assert "happiness" in body["classes"]
    assert body["model"] == "default" and "default" in body["models"]
    assert "haar" in body["detectors"] and body["limits"]["max_upload_bytes"] == LIMIT
    assert body["limits"]["workers"] >= 1


def test_openapi_describes_every_response(server: str) -> None:
    spec = httpx.get(server + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("FaceOut", "PoseOut", "ImageOut", "BatchOut", "VideoOut", "TrackOut", "HealthOut",
                 "ErrorOut", "StreamOut"):
        assert name in schemas, name
    assert {"box", "score", "landmarks", "pose", "expression", "probabilities", "track_id"} <= set(
        schemas["FaceOut"]["properties"])
    assert {"yaw", "pitch", "roll", "yaw_bin"} <= set(schemas["PoseOut"]["properties"])
    ok = spec["paths"]["/predict"]["post"]["responses"]
    assert ok["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ImageOut")
    assert ok["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert {"/predict/batch", "/predict/video", "/health"} <= set(spec["paths"])


def test_docs_are_local(server: str) -> None:
    r = httpx.get(server + "/docs")
    assert r.status_code == 200 and "/openapi.json" in r.text
    assert not re.search(r"https?://", r.text), "the docs page must load nothing from elsewhere"
    assert httpx.get(server + "/redoc").status_code == 404


def test_page_and_its_assets_are_served_locally(server: str) -> None:
    page = httpx.get(server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.js", "/static/style.css"]
    for text in [page.text] + [httpx.get(server + a).text for a in assets]:
        assert not re.search(r"https?://", text), "the page must load nothing from elsewhere"
    assert httpx.get(server + "/static/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(server + "/static/serve.py").status_code == 404
    assert httpx.get(server + "/samples/astronaut.jpg").content == PHOTO
    assert httpx.get(server + "/samples/..%2Fapp.py").status_code == 404


# ----------------------------------------------------------------------------- images
def test_predict_a_photo(server: str) -> None:
    r = _post(server, "astronaut.jpg", PHOTO)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 512 and len(body["faces"]) == 1 and body["model"] == "default"
    face = body["faces"][0]
    assert face["expression"] in face["probabilities"] and len(face["box"]) == 4
    assert set(face["pose"]) >= {"yaw", "pitch", "roll", "yaw_bin"} and len(face["landmarks"]) == 5


def test_whole_image_mode(server: str) -> None:
    r = _post(server, "camera.png", (SAMPLES / "camera.png").read_bytes(), detect="false")
    assert r.status_code == 200 and r.json()["faces"][0]["crop"] == "whole-image"


def test_choose_model_and_detector(server: str) -> None:
    r = _post(server, "astronaut.jpg", PHOTO, model="default", detector="haar")
    assert r.status_code == 200 and r.json()["detector"] == "haar" and r.json()["faces"]
    r = _post(server, "astronaut.jpg", PHOTO, model="nope")
    assert r.status_code == 422 and "'default'" in r.json()["detail"] and "choose one of" in r.json()["detail"]
    r = _post(server, "astronaut.jpg", PHOTO, detector="dlib")
    assert r.status_code == 422 and "blazeface:thorough" in r.json()["detail"]


@pytest.mark.parametrize("data,status,text", [
    (b"", 422, "empty"),
    (b"this is text, not an image", 422, "not an image"),
    (PHOTO[:3000], 422, "truncated or corrupt"),
    (_png_header(20000, 20000), 422, "over the limit"),
    (_png_header(7000, 7000), 422, "--max-megapixels"),  # 49 MP: over the server's 40 MP
    (_png_header(1, 1), 422, "too small"),
])
def test_bad_uploads(server: str, data: bytes, status: int, text: str) -> None:
    r = _post(server, "x.jpg", data)
    assert r.status_code == status and text in r.json()["detail"], r.text


def test_malformed_multipart_says_what_to_do(server: str) -> None:
    r = httpx.post(server + "/predict", content=b"--x\r\nnot a part",
                   headers={"content-type": "multipart/form-data; boundary=b"}, timeout=30)
    assert r.status_code == 400 and "curl -F file=@photo.jpg" in r.json()["detail"], r.text


def test_missing_file_field(server: str) -> None:
    r = httpx.post(server + "/predict", files={"image": ("x.jpg", PHOTO)}, timeout=10)
    assert r.status_code == 422 and "'file' is missing" in r.json()["detail"]


def test_upload_over_the_limit(server: str) -> None:
    r = _post(server, "big.jpg", b"\xff" * (LIMIT + 200 * 1024))
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_chunked_upload_over_the_limit(server: str) -> None:
    """No Content-Length: the body is counted while it is read."""
    boundary = "robustferboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(20):
            yield b"\xff" * (128 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        r = httpx.post(server + "/predict", content=body(), timeout=30,
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    except httpx.TransportError:  # the server may close the connection before the body is sent
        return
    assert r.status_code == 413 and "limit" in r.json()["detail"], r.text


def test_concurrent_requests(server: str) -> None:
    data = (SAMPLES / "grace_hopper.jpg").read_bytes()
    with ThreadPoolExecutor(6) as ex:
        rs = list(ex.map(lambda _: _post(server, "g.jpg", data), range(6)))
    assert all(r.status_code == 200 for r in rs)
    first = rs[0].json()["faces"]
    assert all(r.json()["faces"] == first for r in rs)


def test_batch_reports_each_file(server: str) -> None:
    files = [("files", ("a.jpg", PHOTO)), ("files", ("notes.txt", b"not an image")),
             ("files", ("empty.jpg", b""))]
    r = httpx.post(server + "/predict/batch", files=files, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["ok"], body["failed"]) == (1, 2)
    good, bad, empty = body["results"]
    assert good["filename"] == "a.jpg" and len(good["faces"]) == 1 and good["error"] is None
    assert bad["filename"] == "notes.txt" and "'notes.txt' is not an image" in bad["error"] and not bad["faces"]
    assert "empty" in empty["error"]


def test_batch_file_count_limit(server: str) -> None:
    files = [("files", (f"{i}.jpg", b"x")) for i in range(17)]
    r = httpx.post(server + "/predict/batch", files=files, timeout=30)
    assert r.status_code == 422 and "16 per request" in r.json()["detail"]


# ----------------------------------------------------------------------------- video and stream
def test_video_tracks_faces(server: str, clip: Path) -> None:
    r = httpx.post(server + "/predict/video", files={"file": ("clip.avi", clip.read_bytes())},
                   params={"stride": "2", "smooth": "0.5"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [f["frame"] for f in body["frames"]] == [0, 2, 4] and not body["truncated"]
    assert all(f["faces"] and f["faces"][0]["track_id"] == 0 for f in body["frames"])
    assert body["frames"][1]["time_s"] == pytest.approx(0.2)
    assert [t["track_id"] for t in body["tracks"]] == [0] and body["tracks"][0]["frames"] == 3
    assert "raw_probabilities" in body["frames"][0]["faces"][0]


def test_video_over_the_frame_limit_is_truncated(server: str, clip: Path) -> None:
    r = httpx.post(server + "/predict/video", files={"file": ("clip.avi", clip.read_bytes())}, timeout=120)
    body = r.json()
    assert r.status_code == 200 and len(body["frames"]) == VIDEO_FRAMES
    assert body["truncated"] and "stride" in body["note"]


def test_video_that_is_not_a_video(server: str) -> None:
    r = httpx.post(server + "/predict/video", files={"file": ("holiday.mp4", b"not a video" * 100)}, timeout=30)
    assert r.status_code == 422 and "'holiday.mp4'" in r.json()["detail"], r.text
    assert "robustfer-video-" not in r.json()["detail"]  # no temporary path


def test_websocket_stream(server: str) -> None:
    ws_client = pytest.importorskip("websockets.sync.client")
    with ws_client.connect(server.replace("http", "ws") + "/ws/stream?smooth=0.5", max_size=None) as ws:
        replies = []
        for _ in range(2):
            ws.send(PHOTO)
            replies.append(json.loads(ws.recv(timeout=60)))
        ws.send("hello")
        text_reply = json.loads(ws.recv(timeout=10))
    assert [r["frame"] for r in replies] == [0, 1]
    assert all(len(r["faces"]) == 1 and r["faces"][0]["track_id"] == 0 for r in replies)
    assert replies[1]["faces"][0]["raw_probabilities"] is not None
    assert "binary message" in text_reply["error"]


def test_websocket_refuses_an_unknown_model(server: str) -> None:
    ws_client = pytest.importorskip("websockets.sync.client")
    with ws_client.connect(server.replace("http", "ws") + "/ws/stream?model=nope") as ws:
        assert "unknown model" in json.loads(ws.recv(timeout=10))["error"]


# ----------------------------------------------------------------------------- capacity and time
class SlowRecognizer:
    """A stand-in recognizer whose every image takes ``delay`` seconds."""

    class_names = ("neutral", "happiness")
    source = "/private/models/exp42/best.safetensors"
    _detector_spec = "haar"

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def predict_batch(self, inputs: list, detect: bool = True, names: list | None = None) -> list[ImageResult]:
        time.sleep(self.delay)
        return [ImageResult(n, [], None, 8, 8) for n in names or ["x"] * len(inputs)]


def test_health_names_a_checkpoint_without_its_path(live_server) -> None:
    with live_server(create_app(SlowRecognizer(0.0))) as url:
        body = httpx.get(url + "/health").json()
    assert body["model"] == "best.safetensors" and "/" not in body["model"]
    assert "/private" not in json.dumps(body)


def test_full_queue_answers_503_with_retry_after(live_server) -> None:
    with live_server(create_app(SlowRecognizer(1.0), workers=1, queue=1)) as url, ThreadPoolExecutor(5) as ex:
        rs = list(ex.map(lambda _: _post(url, "x.png", b"x"), range(5)))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    busy = next(r for r in rs if r.status_code == 503)
    assert busy.headers["Retry-After"] == "1" and "busy" in busy.json()["detail"]


def test_a_body_that_trickles_in_answers_408(live_server) -> None:
    """slowloris: headers promise 1,000 bytes, one arrives per 0.2 s; the server answers 408 at
    its body deadline and keeps serving others meanwhile."""
    import socket
    from urllib.parse import urlparse

    with live_server(create_app(SlowRecognizer(0.0), body_timeout_s=1.0)) as url:
        u = urlparse(url)
        with socket.create_connection((u.hostname, u.port), timeout=5) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 1000\r\n\r\n"
                      b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n')
            t, reply = time.monotonic(), b""
            s.setblocking(False)
            while time.monotonic() - t < 4 and b"\r\n\r\n" not in reply:
                try:
                    s.send(b"x")
                except OSError:
                    break
                time.sleep(0.2)
                try:
                    reply += s.recv(4096)
                except BlockingIOError:
                    pass
            answered = time.monotonic() - t
            # the headers and the body may arrive in separate packets: read the body to its length
            head, _, body = reply.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            s.settimeout(5)
            while length and len(body) < int(length.group(1)):
                chunk = s.recv(4096)
                if not chunk:
                    break
                body += chunk
            reply = head + b"\r\n\r\n" + body
            assert _post(url, "x.png", b"x").status_code == 200  # others are served meanwhile
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in reply, reply[:200]
        assert answered < 3


def test_slow_request_answers_504(live_server) -> None:
    with live_server(create_app(SlowRecognizer(1.5), timeout_s=0.3)) as url:
        t = time.monotonic()
        r = _post(url, "x.png", b"x")
        assert r.status_code == 504 and "timeout" in r.json()["detail"]
        assert time.monotonic() - t < 1.4


def test_bad_limits_are_refused() -> None:
    from robustfer.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown limit"):
        create_app(SlowRecognizer(0.0), max_videos=3)
    with pytest.raises(ConfigError, match="must be positive"):
        create_app(SlowRecognizer(0.0), timeout_s=0)


def test_cli_passes_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    import robustfer.serve
    from robustfer import cli

    seen = {}
    monkeypatch.setattr(cli, "_recognizer", lambda args, model=None: SlowRecognizer(0.0))
    monkeypatch.setattr(robustfer.serve, "serve", lambda rec, **kw: seen.update(kw))
    assert cli.main(["serve", "--workers", "3", "--queue", "0", "--timeout", "5", "--max-megapixels", "12",
                     "--max-video-frames", "50", "--port", "9999"]) == 0
    assert (seen["workers"], seen["queue"], seen["timeout_s"], seen["max_pixels"]) == (3, 0, 5.0, 12_000_000)
    assert seen["max_video_frames"] == 50 and seen["port"] == 9999 and seen["graceful_shutdown_s"] == 10.0
    assert isinstance(seen["model_loader"]("default"), SlowRecognizer)


def test_other_shipped_models_load_on_first_use(live_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustfer.serve import workers

    monkeypatch.setattr(workers, "PRETRAINED", {"default": "a.safetensors", "other": "b.safetensors"})
    loaded = []

    def loader(name: str) -> SlowRecognizer:
        loaded.append(name)
        return SlowRecognizer(0.0)

    with live_server(create_app(SlowRecognizer(0.0), model_loader=loader)) as url:
        assert httpx.get(url + "/health").json()["models"] == ["best.safetensors", "default", "other"]
        for _ in range(2):
            r = _post(url, "x.png", b"x", model="other")
            assert r.status_code == 200 and r.json()["model"] == "other"
    assert loaded == ["other"]


def test_each_worker_thread_has_its_own_detector() -> None:
    """The classifier is shared; face detectors (OpenCV's cascades) are not."""
    from robustfer.errors import ConfigError
    from robustfer.serve.workers import InferencePool, Models

    rec = Recognizer.from_pretrained("default", detector="haar")
    pool = InferencePool(Models(rec), workers=2, queue=0, detectors={"haar": "haar"}, max_pixels=10**6)
    both_running = threading.Barrier(2)

    def job(r: Recognizer) -> Recognizer:
        both_running.wait(timeout=20)  # two jobs at once: two threads
        return r

    try:
        a, b = [f.result(timeout=30) for f in [pool.submit(job, "default", "haar") for _ in range(2)]]
    finally:
        pool.shutdown()
    assert a is not b and a.classifier is b.classifier is rec.classifier
    assert a.detector is not b.detector and a.max_pixels == b.max_pixels == 10**6
    with pytest.raises(ConfigError, match="unknown option"):
        rec.clone(max_pxels=3)
