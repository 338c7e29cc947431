"""The web page in a real browser: headless Chromium driven over the Chrome DevTools protocol.

Skipped where Chromium is not installed (``apt-get install chromium``). The page analyses a
bundled sample photos (``/?demo=astronaut.jpg,grace_hopper.jpg``); the test reads the rendered
DOM and compares it with the API's answer for the same photos. ``ROBUSTFER_WRITE_SCREENSHOT=1``
saves the screenshot as ``docs/img/web_page.png`` (else it goes to the test's temporary folder).
The webcam mode runs on Chromium's synthetic camera, the video mode on a clip written here.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
ws_client = pytest.importorskip("websockets.sync.client", reason="the DevTools client needs websockets")

ROOT = Path(__file__).resolve().parents[1]
FINISHED = ("done", "error")  # the page's body[data-state] once a request has been answered
ERROR_TEXT = "(document.querySelector('#error:not([hidden]) #error-text')?.textContent ?? null)"  # shown error
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                                                          "chromium); the browser test needs it")


class DevTools:
    """The few Chrome DevTools protocol calls the test needs, over one page's WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.exceptions: list[str] = []

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=timeout))
            if msg.get("method") == "Runtime.exceptionThrown":
                self.exceptions.append(json.dumps(msg["params"]["exceptionDetails"])[:500])
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 90) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{expression!r} still false after {timeout} s; the page shows: "
                             f"{self.evaluate('document.body.innerText')[:2000]}")

    def open(self, url: str, until: tuple[str, ...] = FINISHED) -> str:
        """Load ``url`` and wait until the page's state (body[data-state]) is one of ``until``."""
        self.call("Page.navigate", url=url)
        return self.state_in(until)

    def state_in(self, states: tuple[str, ...] = FINISHED) -> str:
        """Wait until the page's state (body[data-state]) is one of ``states``; returns it."""
        return self.wait_for(f"document.body && {list(states)}.includes(document.body.dataset.state) "
                             "&& document.body.dataset.state")

    def upload(self, selector: str, path: Path) -> None:
        """Choose ``path`` in a file input, as a user would."""
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def screenshot(self) -> bytes:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", format="png", clip=clip,
                                          captureBeyondViewport=True)["data"])


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
         # a synthetic camera, allowed without asking: the webcam mode runs too
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
         "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.is_file() and port_file.read_text().strip():
                break
            if proc.poll() is not None:
                pytest.fail(f"Chromium exited at start (status {proc.returncode})")
            time.sleep(0.1)
        else:
            pytest.fail("Chromium did not open its DevTools port within 30 s")
        port = port_file.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        pages = [t for t in targets if t["type"] == "page"]
        with ws_client.connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            tools = DevTools(ws)
            tools.call("Runtime.enable")
            tools.call("Page.enable")
            tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1,
                       mobile=False)
            yield tools
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(live_server) -> Iterator[str]:
    from robustfer import Recognizer
    from robustfer.serve import create_app

    with live_server(create_app(Recognizer.from_pretrained("default"))) as url:
        yield url


def test_page_shows_the_faces_of_photos(browser: DevTools, server: str, tmp_path: Path) -> None:
    photos = ["astronaut.jpg", "grace_hopper.jpg"]
    files = [("files", (p, (ROOT / "samples" / p).read_bytes())) for p in photos]
    api = httpx.post(server + "/predict/batch", files=files, timeout=60).json()["results"]
    state = browser.open(server + "/?demo=" + ",".join(photos))
    assert state == "done", browser.evaluate("document.body.innerText")
    shown = browser.evaluate(f"""JSON.stringify({{
        cards: [...document.querySelectorAll('.card')].map((c) => Number(c.dataset.faces)),
        expressions: [...document.querySelectorAll('.face .expression')].map((e) => e.textContent),
        error: {ERROR_TEXT},
        models: [...document.querySelectorAll('#model option')].map((o) => o.value),
        painted: (() => {{ const c = document.querySelector('.card canvas');
                           return c ? [c.width, c.height] : null; }})(),
    }})""")
    shown = json.loads(shown)
    assert shown["error"] is None
    assert shown["cards"] == [len(r["faces"]) for r in api] == [1, 1]
    assert shown["expressions"] == [f["expression"] for r in api for f in r["faces"]]
    assert "default" in shown["models"] and shown["painted"] == [512, 512]
    assert not browser.exceptions, browser.exceptions
    png = browser.screenshot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("ROBUSTFER_WRITE_SCREENSHOT") == "1":  # 256 colours: a third of the bytes for docs/
        from PIL import Image

        shot = Image.open(io.BytesIO(png)).convert("RGB")
        shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            ROOT / "docs" / "img" / "web_page.png", optimize=True)
    else:
        (tmp_path / "web_page.png").write_bytes(png)


def test_page_shows_server_errors(browser: DevTools, server: str) -> None:
    assert browser.open(server + "/?demo=missing.jpg") == "error"
    text = browser.evaluate(ERROR_TEXT) or ""
    assert "404" in text and "astronaut.jpg" in text  # the server's message lists the samples


def test_docs_page_lists_the_api(browser: DevTools, server: str) -> None:
    assert browser.open(server + "/docs") == "done"
    text = browser.evaluate("document.body.innerText")
    assert "/predict/batch" in text and "FaceOut" in text and "track_id" in text


def test_webcam_frames_go_over_the_websocket(browser: DevTools, server: str) -> None:
    """Chromium's fake camera (a test pattern, no face): frames are sent and answered."""
    assert browser.open(server + "/?mode=webcam", until=("ready",)) == "ready"
    browser.evaluate("document.getElementById('cam-start').click()")
    status = browser.wait_for("(t => t.includes('frames/s analysed') && t)"
                              "(document.getElementById('cam-status').textContent)", timeout=60)
    assert "0 face(s)" in status
    browser.evaluate("document.getElementById('cam-stop').click()")
    assert browser.evaluate("document.getElementById('error').hidden")
    assert not browser.exceptions, browser.exceptions


def test_video_mode_shows_tracks(browser: DevTools, server: str, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    image = cv2.imread(str(ROOT / "samples" / "astronaut.jpg"))
    clip = tmp_path / "clip.avi"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, image.shape[1::-1])
    for i in range(4):
        out.write(np.roll(image, 4 * i, axis=1))
    out.release()
    assert browser.open(server + "/?mode=video", until=("ready",)) == "ready"
    browser.evaluate("document.getElementById('stride').value = 1")
    browser.upload("#video-input", clip)
    assert browser.state_in() == "done"
    shown = json.loads(browser.evaluate("""JSON.stringify({
        timelines: [...document.querySelectorAll('#video-timelines .timeline')].map((t) => t.dataset.track),
        status: document.getElementById('video-status').textContent})"""))
    assert shown["timelines"] == ["0"] and "4 frames analysed" in shown["status"]
    assert not browser.exceptions, browser.exceptions
