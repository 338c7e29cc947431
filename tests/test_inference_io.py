"""Reading user images and videos: every kind of bad or unusual input has a defined outcome."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from robustfer.errors import ImageError
from robustfer.inference.io import array_to_rgb, iter_video, load_image

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h pixels (no real pixel data): a decompression bomb stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    img.save(path, **kw)
    return path


def test_sample_photo_loads_as_rgb() -> None:
    a = load_image(SAMPLES / "astronaut.jpg")
    assert a.shape == (512, 512, 3) and a.dtype == np.uint8


def test_all_input_kinds_agree(tmp_path: Path) -> None:
    path = SAMPLES / "grace_hopper.jpg"
    ref = load_image(path)
    assert np.array_equal(load_image(str(path)), ref)
    assert np.array_equal(load_image(path.read_bytes()), ref)
    assert np.array_equal(load_image(Image.open(path)), ref)
    assert np.array_equal(load_image(ref), ref)
    assert np.array_equal(load_image(np.ascontiguousarray(ref[:, :, ::-1]), bgr=True), ref)


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGBA", 4), ("CMYK", 4), ("P", 1), ("I;16", 1)])
def test_modes_become_rgb(tmp_path: Path, mode: str, channels: int) -> None:
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        im = Image.fromarray((rng.integers(0, 65535, (20, 30))).astype(np.uint16))
        path = _save(im, tmp_path / "x16.png")
    elif mode == "CMYK":
        path = _save(base.convert("CMYK"), tmp_path / "x.jpg")
    elif mode == "P":
        path = _save(base.convert("P"), tmp_path / "x.png")
    else:
        path = _save(base.convert(mode), tmp_path / f"x_{mode}.png")
    a = load_image(path)
    assert a.shape == (20, 30, 3) and a.dtype == np.uint8


def test_16bit_keeps_its_range(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    a = load_image(_save(Image.fromarray(ramp), tmp_path / "ramp.png"))
    assert a[0, 0, 0] == 0 and a[0, -1, 0] == 255 and (np.diff(a[0, :, 0].astype(int)) >= 0).all()


def test_rgba_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom transparent
    a = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    assert tuple(a[0, 0]) == (200, 0, 0) and tuple(a[3, 3]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.fromarray(np.zeros((10, 40, 3), np.uint8))  # landscape pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes())
    assert load_image(path).shape == (40, 10, 3)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    a = load_image(path)
    assert a.shape == (8, 8, 3) and abs(int(a[0, 0, 0]) - 10) < 8


@pytest.mark.parametrize("case", ["missing", "folder", "empty", "text", "truncated", "corrupt", "huge", "tiny"])
def test_bad_files_raise_clear_errors(tmp_path: Path, case: str) -> None:
    good = (SAMPLES / "astronaut.jpg").read_bytes()
    path = tmp_path / f"{case}.jpg"
    expect = {"missing": "does not exist", "folder": "is a folder", "empty": "empty",
              "text": "not an image", "truncated": "truncated or corrupt", "corrupt": "not an image",
              "huge": "over the limit", "tiny": "too small"}[case]
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello, I am not a picture\n")
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 3])
    elif case == "corrupt":
        path.write_bytes(b"\x00\x13garbage" * 100)
    elif case == "huge":
        path = tmp_path / "huge.png"
        path.write_bytes(_png_header_only(20000, 20000))
    elif case == "tiny":
        path = _save(Image.fromarray(np.zeros((1, 1, 3), np.uint8)), tmp_path / "tiny.png")
    with pytest.raises(ImageError, match=expect) as e:
        load_image(path)
    assert str(path.name) in str(e.value) or case in ("huge", "tiny")


def test_huge_bytes_checked_before_decoding() -> None:
    with pytest.raises(ImageError, match=r"20000x20000 pixels \(400 MP\)"):
        load_image(_png_header_only(20000, 20000))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
    (np.zeros((4, 4), np.int64), "dtype"),
    (np.full((4, 4), 3.0, np.float32), r"\[0, 1\]"),
    (np.full((4, 4), np.nan, np.float32), "NaN"),
])
def test_bad_arrays(bad: np.ndarray, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        array_to_rgb(bad)


def test_float_and_gray_arrays() -> None:
    a = array_to_rgb(np.full((5, 6), 0.5, np.float32))
    assert a.shape == (5, 6, 3) and a[0, 0, 0] == 128


def test_unsupported_type() -> None:
    with pytest.raises(ImageError, match="cannot read an image from a dict"):
        load_image({"x": 1})  # type: ignore[arg-type]


def _write_video(path: Path, n: int = 6) -> None:
    img = cv2.resize(cv2.imread(str(SAMPLES / "astronaut.jpg")), (160, 160))
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 160))
    for _ in range(n):
        vw.write(img)
    vw.release()


def test_video_frames_and_stride(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_video(path, 6)
    frames = list(iter_video(path, stride=2))
    assert [f.index for f in frames] == [0, 2, 4]
    assert frames[0].image.shape == (160, 160, 3)
    assert frames[1].time_s == pytest.approx(0.2, abs=1e-6)


def test_video_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 2048)
    with pytest.raises(ImageError, match="broken.mp4"):
        list(iter_video(path))
    with pytest.raises(ImageError, match="does not exist"):
        list(iter_video(tmp_path / "nope.mp4"))


def test_bytes_io_roundtrip() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    assert load_image(buf.getvalue()).shape == (8, 8, 3)
