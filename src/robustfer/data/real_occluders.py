"""Realistic occluders drawn from facial landmarks: masks, sunglasses, a hand, a scarf, hair.

Blocks and bands (:mod:`robustfer.data.occlusion`) say how much of a face a model can lose;
they do not look like what covers real faces. These occluders do: each is drawn where it sits on
a real face, from the 468-point face mesh, with its shape, colour, texture and placement drawn
from a generator, so a given ``(seed, sample)`` always gets the same occluder (they are used both
as evaluation occluders, ``+ mask`` etc. in every report, and as training augmentation).

Where the points come from: robustfer's face crops all have one geometry -- FER2013's, which the
inference front end reproduces by aligning the mesh to the FER2013 mesh template
(:func:`robustfer.inference.align.mesh_template`). The occluders are placed on that template,
moved by a random similarity per face (scale 0.92-1.08, shift up to 4 % of the side, rotation up
to 8 degrees) to follow the spread of real crops; pass ``points`` (the face's own mesh in image
pixels) to place them on a particular face instead.

Kinds (what each covers on the template face):

* ``mask`` -- a surgical (pale blue/white, pleated), black or cloth (any colour, woven texture)
  face mask from the nose bridge over mouth and chin to the jaw line, with ear loops.
* ``sunglasses`` -- two dark, tinted lenses (ellipses to rounded rectangles) over the eyes, with
  bridge, rims and temples.
* ``hand`` -- a skin-toned hand (palm, four fingers and a thumb, shaded, finger gaps drawn) at a
  random angle over the mouth, chin, one cheek or one eye.
* ``scarf`` -- a knitted or striped scarf from below the image up over the chin to the mouth,
  with a wavy edge.
* ``hair`` -- a fringe swept from the top over the forehead down to the brows or one eye, with
  strands, in a natural hair colour.

Rendering: shapes are drawn at twice the crop's resolution (at least 96 px) and shrunk with area
averaging, so edges are anti-aliased at 48 px (about 1 ms per 48 px face); a grey image gets the
luminance of the colours.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

#: The realistic occluder kinds.
REALISTIC_KINDS: tuple[str, ...] = ("mask", "sunglasses", "hand", "scarf", "hair")

# Face-mesh indices (MediaPipe's 468-point topology).
_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
         152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
_JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
        361, 323, 454)
_RIGHT_EYE = (33, 133, 159, 145)
_LEFT_EYE = (263, 362, 386, 374)
_RIGHT_BROW = (70, 63, 105, 66, 107)
_LEFT_BROW = (336, 296, 334, 293, 300)
_NOSE_BRIDGE, _NOSE_MID, _NOSE_TIP = 6, 195, 1
_UPPER_LIP, _LOWER_LIP, _CHIN = 13, 14, 152
_CHEEK_R, _CHEEK_L = 205, 425

_SKIN = ((255, 219, 172), (241, 194, 125), (224, 172, 140), (198, 134, 66), (161, 102, 94),
         (141, 85, 36), (110, 70, 50), (80, 52, 38))
_HAIR = ((20, 16, 14), (45, 30, 22), (80, 50, 30), (120, 80, 45), (200, 170, 110), (140, 60, 30),
         (150, 150, 150), (230, 220, 200))


#: The FER2013 face-mesh template (the file the inference front end aligns faces to).
TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "weights" / "face" / "fer_mesh_template.npy"


@lru_cache(maxsize=1)
def template_points() -> np.ndarray:
    """The (468, 2) FER2013 mesh template in crop-side units."""
    if not TEMPLATE_PATH.is_file():
        raise FileNotFoundError(f"{TEMPLATE_PATH.name} is missing from robustfer/weights/face; reinstall robustfer.")
    return np.load(TEMPLATE_PATH).astype(np.float64)[:, :2]


def jittered_points(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The template in pixels of an ``h`` x ``w`` crop, moved by a random similarity."""
    t = template_points()
    c = t.mean(0)
    s = rng.uniform(0.92, 1.08)
    a = math.radians(rng.uniform(-8.0, 8.0))
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    p = (t - c) @ r.T * s + c + rng.uniform(-0.04, 0.04, size=2)
    return p * np.array([w, h], dtype=np.float64)


def draw_occluder(img: np.ndarray, kind: str, rng: np.random.Generator,
                  points: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``img`` (uint8, (H, W) or (H, W, C)) with a ``kind`` occluder drawn on it.

    Args:
        img: the face crop.
        kind: one of :data:`REALISTIC_KINDS`.
        rng: the generator every random choice is drawn from (placement first).
        points: (468, 2) face-mesh points in pixels of ``img``; default: the jittered template.
    """
    import cv2

    if img.ndim == 3 and img.shape[2] == 1:
        return draw_occluder(img[:, :, 0], kind, rng, points)[:, :, None]
    if kind not in REALISTIC_KINDS:
        raise ValueError(f"unknown realistic occluder {kind!r}; expected one of {list(REALISTIC_KINDS)}")
    h, w = img.shape[:2]
    pts = jittered_points(h, w, rng) if points is None else np.asarray(points, dtype=np.float64)[:, :2]
    k = max(2, int(math.ceil(96 / max(1, min(h, w)))))
    big = (h * k, w * k)
    colour = np.zeros(big + (3,), np.float32)
    alpha = np.zeros(big, np.float32)
    _DRAW[kind](colour, alpha, pts * k, rng, k)
    colour = cv2.resize(colour, (w, h), interpolation=cv2.INTER_AREA)
    alpha = np.clip(cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA), 0.0, 1.0)
    base = img.astype(np.float32)
    if img.ndim == 2:
        colour = colour @ np.array([0.299, 0.587, 0.114], np.float32)
        out = base * (1 - alpha) + colour * alpha
    else:
        c = colour if img.shape[2] == 3 else np.concatenate([colour, base[:, :, 3:]], 2)
        out = base * (1 - alpha[:, :, None]) + c * alpha[:, :, None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ helpers
def _poly(alpha: np.ndarray, pts: np.ndarray, value: float = 1.0) -> None:
    import cv2

    cv2.fillPoly(alpha, [np.round(pts).astype(np.int32)], value, lineType=cv2.LINE_AA)


def _mean(pts: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    return pts[list(idx)].mean(0)


def _paint(colour: np.ndarray, region: np.ndarray, rgb: np.ndarray) -> None:
    m = region > 0
    colour[m] = rgb[m] if rgb.ndim == 3 else rgb


def _shaded(shape: tuple[int, int], base: tuple[float, ...], rng: np.random.Generator, grain: float,
            direction: float | None = None) -> np.ndarray:
    """A colour field: ``base`` with a light gradient and fine grain."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi) if direction is None else direction
    g = (np.cos(a) * xx / w + np.sin(a) * yy / h)
    light = 1.0 + rng.uniform(0.08, 0.2) * (g - g.mean())
    noise = (rng.standard_normal(size=(h, w), dtype=np.float32) * grain)
    return np.clip(np.asarray(base, np.float32)[None, None, :] * light[:, :, None] + noise[:, :, None], 0, 255)


# ------------------------------------------------------------------ the occluders
def _mask(colour: np.ndarray, alpha: np.ndarray, p: np.ndarray, rng: np.random.Generator, k: int) -> None:
    import cv2

    centre = p[list(_OVAL)].mean(0)
    jaw = p[list(_JAW)]
    jaw = centre + (jaw - centre) * rng.uniform(1.02, 1.08)
    bridge = p[_NOSE_BRIDGE] + (p[_NOSE_MID] - p[_NOSE_BRIDGE]) * rng.uniform(0.3, 0.8)
    # top edge: cheek -> just under the eyes -> nose bridge -> other side
    under_r = _mean(p, _RIGHT_EYE) + (p[_NOSE_TIP] - p[_NOSE_BRIDGE]) * 0.45
    under_l = _mean(p, _LEFT_EYE) + (p[_NOSE_TIP] - p[_NOSE_BRIDGE]) * 0.45
    poly = np.vstack([jaw, [jaw[-1] * 0.5 + under_l * 0.5, under_l, bridge, under_r, jaw[0] * 0.5 + under_r * 0.5]])
    region = np.zeros_like(alpha)
    _poly(region, poly)
    style = rng.choice(["surgical", "black", "cloth"], p=[0.5, 0.2, 0.3])
    if style == "surgical":
        base = (rng.uniform(150, 190), rng.uniform(195, 225), rng.uniform(220, 245)) if rng.random() < 0.7 \
            else (235.0, 235.0, 232.0)
        rgb = _shaded(alpha.shape, base, rng, 3.0, direction=math.pi / 2)
        top, bot = poly[:, 1].min(), poly[:, 1].max()
        for f in (0.35, 0.55, 0.75):  # pleats
            y = int(top + f * (bot - top))
            cv2.line(rgb, (0, y), (alpha.shape[1], y + int(rng.integers(-k, k + 1))),
                     tuple(float(v) * 0.85 for v in base), max(1, k // 2), cv2.LINE_AA)
    elif style == "black":
        rgb = _shaded(alpha.shape, (rng.uniform(15, 45),) * 3, rng, 3.0)
    else:
        base = tuple(rng.uniform(30, 230, size=3))
        rgb = _shaded(alpha.shape, base, rng, 10.0)  # woven grain
    _paint(colour, region, rgb)
    alpha[:] = np.maximum(alpha, region)
    # ear loops from the mask's upper corners towards the ears
    ear_r, ear_l = p[234] + (p[234] - centre) * 0.15, p[454] + (p[454] - centre) * 0.15
    loop_col = (230.0, 230.0, 230.0) if style == "surgical" else tuple(float(v) for v in rgb[int(bridge[1]), int(bridge[0])])
    for a, b in ((poly[-1], ear_r), (poly[len(jaw)], ear_l)):
        cv2.line(colour, tuple(int(v) for v in a), tuple(int(v) for v in b), loop_col, max(1, k // 2), cv2.LINE_AA)
        cv2.line(alpha, tuple(int(v) for v in a), tuple(int(v) for v in b), 1.0, max(1, k // 2), cv2.LINE_AA)


def _sunglasses(colour: np.ndarray, alpha: np.ndarray, p: np.ndarray, rng: np.random.Generator, k: int) -> None:
    import cv2

    er, el = _mean(p, _RIGHT_EYE), _mean(p, _LEFT_EYE)
    iod = float(np.linalg.norm(el - er))
    ang = math.atan2(el[1] - er[1], el[0] - er[0])
    a = iod * rng.uniform(0.40, 0.50)
    b = a * rng.uniform(0.65, 0.85)
    expo = rng.uniform(2.0, 4.0)  # 2 = ellipse, 4 = rounded rectangle
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    cx, sx = np.cos(t), np.sin(t)
    ux = np.sign(cx) * np.abs(cx) ** (2 / expo) * a
    uy = np.sign(sx) * np.abs(sx) ** (2 / expo) * b
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    shift = np.array([-math.sin(ang), math.cos(ang)]) * b * rng.uniform(0.0, 0.3)
    tint = np.array([rng.uniform(5, 60)] * 3) + rng.uniform(0, 25, size=3) * (rng.random() < 0.5)
    lens_rgb = _shaded(alpha.shape, tuple(tint), rng, 2.0, direction=math.pi / 2 + ang)
    frame = tuple(float(v) for v in (rng.uniform(0, 60, size=3) if rng.random() < 0.7 else rng.uniform(120, 220, size=3)))
    th = max(1, int(round(iod * rng.uniform(0.04, 0.08))))
    lenses = []
    for c in (er, el):
        poly = np.stack([ux, uy], 1) @ rot.T + c + shift
        lenses.append(poly)
        region = np.zeros_like(alpha)
        _poly(region, poly)
        _paint(colour, region, lens_rgb)
        alpha[:] = np.maximum(alpha, region)
        # a highlight
        hl = c + shift + rot @ np.array([-a * 0.35, -b * 0.4])
        cv2.ellipse(colour, (int(hl[0]), int(hl[1])), (max(1, int(a * 0.25)), max(1, int(b * 0.12))),
                    math.degrees(ang) - 20, 0, 360, tuple(float(v) + 60 for v in tint), -1, cv2.LINE_AA)
        cv2.polylines(colour, [np.round(poly).astype(np.int32)], True, frame, th, cv2.LINE_AA)
        cv2.polylines(alpha, [np.round(poly).astype(np.int32)], True, 1.0, th, cv2.LINE_AA)
    # bridge and temples
    inner_r = lenses[0][np.argmax(lenses[0] @ np.array([math.cos(ang), math.sin(ang)]))]
    inner_l = lenses[1][np.argmin(lenses[1] @ np.array([math.cos(ang), math.sin(ang)]))]
    outer_r = lenses[0][np.argmin(lenses[0] @ np.array([math.cos(ang), math.sin(ang)]))]
    outer_l = lenses[1][np.argmax(lenses[1] @ np.array([math.cos(ang), math.sin(ang)]))]
    lines = [(inner_r, inner_l), (outer_r, outer_r + (p[234] - outer_r) * 1.1), (outer_l, outer_l + (p[454] - outer_l) * 1.1)]
    for u, v in lines:
        cv2.line(colour, tuple(int(x) for x in u), tuple(int(x) for x in v), frame, th, cv2.LINE_AA)
        cv2.line(alpha, tuple(int(x) for x in u), tuple(int(x) for x in v), 1.0, th, cv2.LINE_AA)


def _capsule(img: np.ndarray, a: np.ndarray, b: np.ndarray, r: float, value) -> None:  # type: ignore[no-untyped-def]
    import cv2

    cv2.line(img, tuple(int(x) for x in a), tuple(int(x) for x in b), value, max(1, int(2 * r)), cv2.LINE_AA)
    cv2.circle(img, tuple(int(x) for x in b), max(1, int(r)), value, -1, cv2.LINE_AA)


def _hand(colour: np.ndarray, alpha: np.ndarray, p: np.ndarray, rng: np.random.Generator, k: int) -> None:
    import cv2

    side = float(np.linalg.norm(p[454] - p[234]))  # face width
    where = rng.choice(["mouth", "chin", "cheek_r", "cheek_l", "eye_r", "eye_l"], p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.1])
    anchor = {"mouth": p[_UPPER_LIP], "chin": p[_CHIN], "cheek_r": p[_CHEEK_R], "cheek_l": p[_CHEEK_L],
              "eye_r": _mean(p, _RIGHT_EYE), "eye_l": _mean(p, _LEFT_EYE)}[str(where)]
    anchor = anchor + rng.normal(0, 0.04 * side, size=2)
    # fingers point up-and-inwards from below or from the side
    ang = math.radians(rng.uniform(-150, -30))
    u = np.array([math.cos(ang), math.sin(ang)])  # along the fingers
    v = np.array([-u[1], u[0]])                   # across the hand
    s = side * rng.uniform(0.85, 1.1)
    palm_c = anchor - u * 0.18 * s
    skin = np.asarray(_SKIN[int(rng.integers(len(_SKIN)))], np.float64) * rng.uniform(0.9, 1.1)
    region = np.zeros_like(alpha)
    cv2.ellipse(region, (int(palm_c[0]), int(palm_c[1])), (int(0.22 * s), int(0.26 * s)),
                math.degrees(ang) + 90, 0, 360, 1.0, -1, cv2.LINE_AA)
    # wrist down to the image edge
    wrist = palm_c - u * 0.9 * s
    _capsule(region, palm_c, wrist, 0.19 * s, 1.0)
    fingers = []
    for i, off in enumerate((-0.15, -0.05, 0.05, 0.15)):
        base = palm_c + u * 0.2 * s + v * off * s
        length = s * (0.26, 0.32, 0.30, 0.24)[i] * rng.uniform(0.9, 1.1)
        tip = base + (u + v * off * rng.uniform(0.2, 0.8)) / np.linalg.norm(u + v * off * 0.5) * length
        fingers.append((base, tip))
        _capsule(region, base, tip, 0.048 * s, 1.0)
    thumb_side = 1.0 if rng.random() < 0.5 else -1.0
    tb = palm_c + v * thumb_side * 0.18 * s
    _capsule(region, tb, tb + (v * thumb_side * 0.8 + u * 0.6) * 0.22 * s, 0.055 * s, 1.0)
    rgb = _shaded(alpha.shape, tuple(skin), rng, 2.5)
    _paint(colour, region, rgb)
    # the gaps between fingers and a shadow at the palm's edge
    gap = tuple(float(c) * 0.7 for c in skin)
    for (b0, t0), (b1, t1) in zip(fingers, fingers[1:]):
        m0, m1 = (b0 + b1) / 2, (t0 + t1) / 2
        cv2.line(colour, tuple(int(x) for x in m0), tuple(int(x) for x in m0 + (m1 - m0) * 0.8), gap,
                 max(1, k // 2), cv2.LINE_AA)
    alpha[:] = np.maximum(alpha, region)


def _scarf(colour: np.ndarray, alpha: np.ndarray, p: np.ndarray, rng: np.random.Generator, k: int) -> None:
    import cv2

    h, w = alpha.shape
    top_y = p[_LOWER_LIP][1] + (p[_CHIN][1] - p[_LOWER_LIP][1]) * rng.uniform(-1.0, 0.2)
    xs = np.linspace(-0.05 * w, 1.05 * w, 40)
    phase, amp = rng.uniform(0, 2 * math.pi), rng.uniform(0.01, 0.03) * h
    sag = rng.uniform(-0.04, 0.06) * h
    edge = top_y + amp * np.sin(xs / w * rng.uniform(4, 9) + phase) + sag * ((xs / w - 0.5) * 2) ** 2
    poly = np.vstack([np.stack([xs, edge], 1), [[1.05 * w, 1.05 * h], [-0.05 * w, 1.05 * h]]])
    region = np.zeros_like(alpha)
    _poly(region, poly)
    base = rng.uniform(20, 230, size=3)
    rgb = _shaded(alpha.shape, tuple(base), rng, 8.0)
    style = rng.choice(["stripes", "checks", "knit"])
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.uniform(0.06, 0.14) * h
    other = rng.uniform(20, 230, size=3)
    if style == "stripes":
        band = ((yy + 0.3 * xx) // period) % 2 == 1
    elif style == "checks":
        band = ((yy // period) + (xx // period)) % 2 == 1
    else:
        band = (np.sin(xx / period * 6) * np.sin(yy / period * 6)) > 0.3
        other = base * 0.8
    rgb[band] = rgb[band] * 0.3 + other * 0.7
    _paint(colour, region, rgb)
    cv2.polylines(colour, [np.round(np.stack([xs, edge], 1)).astype(np.int32)], False,
                  tuple(float(c) * 0.6 for c in base), max(1, k // 2), cv2.LINE_AA)
    alpha[:] = np.maximum(alpha, region)


def _hair(colour: np.ndarray, alpha: np.ndarray, p: np.ndarray, rng: np.random.Generator, k: int) -> None:
    import cv2

    h, w = alpha.shape
    brow_y = float(np.concatenate([p[list(_RIGHT_BROW)], p[list(_LEFT_BROW)]])[:, 1].mean())
    eye_y = float((_mean(p, _RIGHT_EYE)[1] + _mean(p, _LEFT_EYE)[1]) / 2)
    # a swept fringe: the lower edge runs from about the brows on one side to the eye on the other
    low, high = brow_y + rng.uniform(-0.08, 0.02) * h, eye_y + rng.uniform(-0.02, 0.08) * h
    if rng.random() < 0.5:
        low, high = high, low
    xs = np.linspace(-0.05 * w, 1.05 * w, 60)
    edge = low + (high - low) * (xs / w) + rng.normal(0, 0.015 * h, size=len(xs))
    edge[::2] += rng.uniform(0.01, 0.04) * h  # strand tips
    poly = np.vstack([np.stack([xs, edge], 1), [[1.05 * w, -0.05 * h], [-0.05 * w, -0.05 * h]]])
    region = np.zeros_like(alpha)
    _poly(region, poly)
    base = np.asarray(_HAIR[int(rng.integers(len(_HAIR)))], np.float64) * rng.uniform(0.85, 1.15)
    rgb = _shaded(alpha.shape, tuple(base), rng, 6.0, direction=math.pi / 2)
    # strands: thin lines along the sweep
    slope = (high - low) / w
    for _ in range(int(60 * w / 192)):
        x0 = rng.uniform(-0.1, 1.1) * w
        y1 = low + (high - low) * np.clip(x0 / w, 0, 1)
        x1 = x0 + rng.uniform(-0.1, 0.1) * w + slope * 0.2 * w
        shade = tuple(float(np.clip(c * rng.uniform(0.6, 1.4), 0, 255)) for c in base)
        cv2.line(rgb, (int(x0), 0), (int(x1), int(y1)), shade, max(1, k // 3), cv2.LINE_AA)
    _paint(colour, region, rgb)
    alpha[:] = np.maximum(alpha, region)


_DRAW = {"mask": _mask, "sunglasses": _sunglasses, "hand": _hand, "scarf": _scarf, "hair": _hair}
