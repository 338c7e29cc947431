"""Reading the images and videos users hand to the inference API.

Everything becomes a uint8 RGB array ``(H, W, 3)``. Pillow decodes files and bytes, so the
EXIF orientation is applied, palette/CMYK/16-bit/grayscale/alpha images are converted, and an
animated image yields its first frame. Inputs that cannot be used raise
:class:`~robustfer.errors.ImageError` with the reason and what to do; nothing is guessed.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from robustfer.errors import ImageError

#: Largest image accepted, in pixels (width x height). 100 MP is a 12000 x 8000 photo.
MAX_IMAGE_PIXELS = 100_000_000
#: Smallest side accepted; below this no face can be seen.
MIN_IMAGE_SIDE = 2

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".pgm", ".ppm", ".pbm", ".jfif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                              ".wmv", ".flv"})

ImageInput = Union[str, Path, bytes, np.ndarray, Any]  # Any: a PIL.Image.Image


def _check_size(w: int, h: int, what: str, max_pixels: int) -> None:
    if w < MIN_IMAGE_SIDE or h < MIN_IMAGE_SIDE:
        raise ImageError(f"{what} is {w}x{h} pixels, too small to hold a face; pass a photo or a "
                         "face crop of at least a few pixels a side.")
    if w * h > max_pixels:
        raise ImageError(
            f"{what} is {w}x{h} pixels ({w * h / 1e6:.0f} MP), over the limit of "
            f"{max_pixels / 1e6:.0f} MP; downscale it first or pass a larger max_pixels."
        )


def _pil_to_rgb(im: Any, what: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps

    _check_size(im.width, im.height, what, max_pixels)
    try:
        if getattr(im, "is_animated", False):
            im.seek(0)
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            hi = 65535.0 if a.max() > 255 else 255.0
            return np.repeat(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)[:, :, None], 3, 2)
        if im.mode == "F":
            a = np.asarray(im, dtype=np.float64)
            a = a * 255.0 if a.max() <= 1.0 else a
            return np.repeat(np.clip(a + 0.5, 0, 255).astype(np.uint8)[:, :, None], 3, 2)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            # Composite transparent pixels on white, as viewers show them.
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{what} cannot be decoded ({e}); the file is truncated or corrupt. "
                         "Re-export or remove it.") from None


_PIL_OPEN_LOCK = threading.Lock()


def _open_pil(src: Any, what: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow's own decompression-bomb check would reject (or only warn about) images by
        # its global limit; robustfer checks the size from the header itself, before decoding.
        with _PIL_OPEN_LOCK:
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(src)
            finally:
                Image.MAX_IMAGE_PIXELS = old
        with im:
            _check_size(im.width, im.height, what, max_pixels)
            im.load()
            return _pil_to_rgb(im, what, max_pixels)
    except UnidentifiedImageError:
        raise ImageError(f"{what} is not an image Pillow can read; supported are JPEG, PNG, "
                         "BMP, GIF, TIFF, WebP and PNM files.") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{what} cannot be decoded ({e}); the file is truncated or corrupt. "
                         "Re-export or remove it.") from None


def array_to_rgb(a: np.ndarray, what: str = "array", bgr: bool = False,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Convert an image array to uint8 RGB ``(H, W, 3)``.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` and ``(H, W, 4)``; uint8, uint16, or float
    in [0, 1]. ``bgr=True`` for arrays from OpenCV (``cv2.imread``/``VideoCapture``).
    """
    if not isinstance(a, np.ndarray):
        raise ImageError(f"{what}: expected a numpy array, got {type(a).__name__}.")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"{what} has shape {a.shape}; expected (H, W), (H, W, 3) or (H, W, 4) "
                         "(one image; pass a list for several).")
    _check_size(a.shape[1], a.shape[0], what, max_pixels)
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError(f"{what} contains NaN or infinite values.")
        if a.min() < 0 or a.max() > 1.0:
            raise ImageError(f"{what} is a float array with values in [{a.min():.3g}, {a.max():.3g}]; "
                             "expected [0, 1] (or pass uint8 0-255).")
        a = (a * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ImageError(f"{what} has dtype {a.dtype}; expected uint8, uint16 or float in [0, 1].")
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = (a[:, :, :3].astype(np.float32) * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    if bgr:
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a[:, :, :3])


def load_image(src: ImageInput, bgr: bool = False, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any supported image input -> uint8 RGB ``(H, W, 3)``.

    Args:
        src: a file path, encoded bytes, a numpy array (RGB unless ``bgr``) or a PIL image.
        bgr: the array is in OpenCV's BGR order.
        max_pixels: refuse images larger than this (decompression bombs, 20000x20000 scans).

    Raises:
        ImageError: the input does not exist, is not an image, is corrupt or out of limits.
    """
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.exists():
            raise ImageError(f"{path} does not exist; check the path.")
        if path.is_dir():
            raise ImageError(f"{path} is a folder; pass image files (the CLI walks folders).")
        if path.stat().st_size == 0:
            raise ImageError(f"{path} is empty (0 bytes); re-copy or remove it.")
        return _open_pil(str(path), str(path), max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageError("the image data is empty (0 bytes).")
        return _open_pil(io.BytesIO(bytes(src)), "the uploaded image", max_pixels)
    if isinstance(src, np.ndarray):
        return array_to_rgb(src, "array", bgr, max_pixels)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(src, Image.Image):
        return _pil_to_rgb(src, "PIL image", max_pixels)
    raise ImageError(f"cannot read an image from a {type(src).__name__}; pass a path, bytes, "
                     "a numpy array or a PIL image.")


@dataclass
class Frame:
    """One decoded video frame."""

    index: int
    time_s: float
    image: np.ndarray  # uint8 RGB


def iter_video(path: str | Path, stride: int = 1, max_pixels: int = MAX_IMAGE_PIXELS) -> Iterator[Frame]:
    """Yield every ``stride``-th frame of a video as RGB.

    Raises:
        ImageError: the file does not exist, or no frame of it can be decoded.
    """
    import cv2

    if stride < 1:
        raise ImageError(f"frame stride must be >= 1, got {stride}.")
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} does not exist; check the path.")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ImageError(f"{path} cannot be opened as a video (unsupported codec or container, "
                             "or a corrupt file).")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        decoded = 0
        for fr in _grab(cap, stride, max_pixels, str(path), lambda i: i / fps if fps > 0 else float("nan")):
            decoded += 1
            yield fr
        if decoded == 0:
            raise ImageError(f"{path} has no decodable frames; the video is empty or corrupt.")
    finally:
        cap.release()


def _grab(cap: Any, stride: int, max_pixels: int, name: str, clock: Any,
          max_frames: int | None = None) -> Iterator[Frame]:
    """Every ``stride``-th decodable frame of an open capture (at most ``max_frames``), with
    its index and the time ``clock(index)``."""
    i = n = 0
    while max_frames is None or n < max_frames:
        if not cap.grab():
            break
        if i % stride == 0:
            ok, frame = cap.retrieve()
            if ok and frame is not None:
                n += 1
                yield Frame(i, clock(i), array_to_rgb(frame, f"{name} frame {i}", bgr=True, max_pixels=max_pixels))
        i += 1


def open_stream(source: int | str, stride: int = 1, max_pixels: int = MAX_IMAGE_PIXELS,
                max_frames: int | None = None) -> Iterator[Frame]:
    """Frames of a live source: a camera index (``0``, or ``"0"``) or anything OpenCV's
    ``VideoCapture`` opens (an ``rtsp://`` / ``http://`` URL, a device path, a video file).

    Frame times are seconds since the stream was opened. The stream ends when the source does,
    after ``max_frames`` frames, or when the caller stops iterating (Ctrl-C included); the
    capture is released in every case.

    Raises:
        ImageError: the source cannot be opened.
    """
    import time

    import cv2

    if stride < 1:
        raise ImageError(f"frame stride must be >= 1, got {stride}.")
    src: int | str = int(source) if isinstance(source, int) or str(source).isdigit() else str(source)
    cap = cv2.VideoCapture(src)
    try:
        if not cap.isOpened():
            what = f"camera {src}" if isinstance(src, int) else f"stream {src}"
            raise ImageError(f"cannot open {what}; check that it exists and is not in use "
                             "(cameras are numbered from 0; URLs need a reachable server).")
        t0 = time.monotonic()
        yield from _grab(cap, stride, max_pixels, str(src), lambda i: time.monotonic() - t0, max_frames)
    finally:
        cap.release()
