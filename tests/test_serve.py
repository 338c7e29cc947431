"""The web service, tested with a real HTTP client against a server on localhost."""

from __future__ import annotations

import socket
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
from robustfer.serve import create_app  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _png_header(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression-bomb stand-in)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


LIMIT = 1024 * 1024  # 1 MB upload limit for the test server


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Recognizer.from_pretrained("default"), max_upload_bytes=LIMIT)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        pytest.fail("server did not start")
    yield url
    srv.should_exit = True
    t.join(timeout=10)


def _post(url: str, name: str, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(url + "/predict", files={"file": (name, data, "application/octet-stream")},
                      params=params, timeout=60)


def test_health(server: str) -> None:
    r = httpx.get(server + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert "happiness" in r.json()["classes"]


def test_predict_a_photo(server: str) -> None:
    r = _post(server, "astronaut.jpg", (SAMPLES / "astronaut.jpg").read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 512 and len(body["faces"]) == 1
    face = body["faces"][0]
    assert face["expression"] in face["probabilities"] and len(face["box"]) == 4


def test_whole_image_mode(server: str) -> None:
    r = _post(server, "camera.png", (SAMPLES / "camera.png").read_bytes(), detect="false")
    assert r.status_code == 200 and r.json()["faces"][0]["crop"] == "whole-image"


@pytest.mark.parametrize("data,status,text", [
    (b"", 422, "empty"),
    (b"this is text, not an image", 422, "not an image"),
    ((SAMPLES / "astronaut.jpg").read_bytes()[:3000], 422, "truncated or corrupt"),
    (_png_header(20000, 20000), 422, "over the limit"),
    (_png_header(1, 1), 422, "too small"),
])
def test_bad_uploads(server: str, data: bytes, status: int, text: str) -> None:
    r = _post(server, "x.jpg", data)
    assert r.status_code == status and text in r.json()["detail"], r.text


def test_missing_file_field(server: str) -> None:
    assert httpx.post(server + "/predict", timeout=10).status_code == 422


def test_upload_over_the_limit(server: str) -> None:
    r = _post(server, "big.jpg", b"\xff" * (LIMIT + 200 * 1024))
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_concurrent_requests(server: str) -> None:
    data = (SAMPLES / "grace_hopper.jpg").read_bytes()
    with ThreadPoolExecutor(6) as ex:
        rs = list(ex.map(lambda _: _post(server, "g.jpg", data), range(6)))
    assert all(r.status_code == 200 for r in rs)
    first = rs[0].json()["faces"]
    assert all(r.json()["faces"] == first for r in rs)
