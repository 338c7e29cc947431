"""Synthetic occlusion for robustness evaluation.

An :class:`Occluder` is applied at test time to the decoded uint8 face image, (H, W) gray or
(H, W, C) colour, *before* resizing and normalisation, so the covered fraction refers to the
face crop the dataset provides. Kinds:

* ``block``: one axis-aligned, near-square block covering ``level`` of the image area
  (``0 < level <= 1``; the default set uses 0.1-0.5). Its height and width are chosen so
  that ``h * w`` is as close as possible to ``level * H * W`` (the error is at most half a
  row or column: see :func:`block_size`); its position is uniform over all placements fully
  inside the image.
* ``eye_band``: a full-width horizontal band over rows ``[0.25 H, 0.50 H)``, covering the
  eyebrows and both eyes (25 % of the area). On the mean FER2013Test face the eyebrows lie at
  about 27 % and the eye centres at 33-38 % of the height; RAF-DB and AffectNet aligned faces
  place the eyes in the same band.
* ``lower_face``: a full-width mask over rows ``[0.60 H, H)``, from just above the nose tip
  down through mouth and chin, like a surgical mask (40 % of the area). On the mean
  FER2013Test face the nose tip is at about 58-60 % and the mouth at 75-80 % of the height.

* ``mask``, ``sunglasses``, ``hand``, ``scarf``, ``hair``: realistic occluders drawn from the
  face's landmarks with their own shapes, colours and textures
  (:mod:`robustfer.data.real_occluders`; the fill does not apply). ``realistic`` in an
  occluder list means all five.

Fill (``fill=``): ``"black"`` (0, the default, as in most occlusion-robustness papers),
``"gray"`` (128), ``"noise"`` (independent uniform 0-255 per pixel and channel, drawn from the
generator), or an integer 0-255.

Determinism: :func:`occlusion_rng` derives the generator from ``(seed, sample index, kind,
level)`` only, so a given sample gets the same occluded image whatever the batch order, the
number of workers, or the other occluders evaluated. :func:`apply_occluder` draws the block
position first, then the noise fill.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from robustfer.data.real_occluders import REALISTIC_KINDS, draw_occluder
from robustfer.errors import ConfigError

#: Occluder kinds.
OCCLUDER_KINDS: tuple[str, ...] = ("block", "eye_band", "lower_face") + REALISTIC_KINDS
#: Named fills.
FILLS: dict[str, int | None] = {"black": 0, "gray": 128, "grey": 128, "noise": None}
#: Default fill.
DEFAULT_FILL = "black"
#: Rows covered by ``eye_band``, as fractions of the image height: [start, end).
EYE_BAND: tuple[float, float] = (0.25, 0.50)
#: Rows covered by ``lower_face``, as fractions of the image height: [start, end).
LOWER_FACE: tuple[float, float] = (0.60, 1.00)
#: Block levels of the default set.
DEFAULT_BLOCK_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


def _level_name(level: float) -> str:
    pct = level * 100
    return f"block{int(round(pct))}" if abs(pct - round(pct)) < 1e-9 else f"block{pct:g}"


@dataclass(frozen=True)
class Occluder:
    """One synthetic occlusion.

    Attributes:
        name: short name for reports (``block30``, ``eye_band``).
        kind: one of :data:`OCCLUDER_KINDS`.
        level: fraction of the image area a ``block`` covers; ``None`` for the band kinds,
            whose geometry is fixed (:data:`EYE_BAND`, :data:`LOWER_FACE`), and for the
            realistic kinds, whose shape follows the face.
    """

    name: str
    kind: str
    level: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in OCCLUDER_KINDS:
            raise ConfigError(
                f"occluder kind {self.kind!r} is unknown; expected one of {list(OCCLUDER_KINDS)}."
            )
        if self.kind == "block":
            if self.level is None or not 0.0 < float(self.level) <= 1.0:
                raise ConfigError(
                    f"block occluder {self.name!r} needs a level in (0, 1] (fraction of the "
                    f"image area), got {self.level!r}; e.g. block:0.3."
                )
        elif self.level is not None:
            raise ConfigError(
                f"occluder {self.name!r} of kind {self.kind} takes no level (its shape is "
                f"fixed), got {self.level!r}; write just {self.kind}."
            )

    @classmethod
    def block(cls, level: float) -> Occluder:
        """A ``block`` occluder named after its level (0.3 -> ``block30``)."""
        return cls(_level_name(float(level)), "block", float(level))

    @property
    def realistic(self) -> bool:
        """Whether this is one of the landmark-drawn occluders."""
        return self.kind in REALISTIC_KINDS

    @property
    def area_fraction(self) -> float:
        """Nominal fraction of the image area covered (NaN for the realistic kinds, whose
        cover varies from face to face)."""
        if self.kind == "block":
            assert self.level is not None
            return float(self.level)
        if self.realistic:
            return float("nan")
        lo, hi = EYE_BAND if self.kind == "eye_band" else LOWER_FACE
        return hi - lo


def realistic_occluders() -> list[Occluder]:
    """mask, sunglasses, hand, scarf, hair."""
    return [Occluder(k, k) for k in REALISTIC_KINDS]


def default_occluders() -> list[Occluder]:
    """block10, block20, block30, block40, block50, eye_band, lower_face, and the realistic
    mask, sunglasses, hand, scarf, hair."""
    return [Occluder.block(lv) for lv in DEFAULT_BLOCK_LEVELS] + [
        Occluder("eye_band", "eye_band"),
        Occluder("lower_face", "lower_face"),
    ] + realistic_occluders()


def parse_occluders(spec: str) -> list[Occluder]:
    """Parse a CLI occluder list.

    Args:
        spec: ``"default"``, ``"none"`` (or empty), or comma-separated items ``block:<level>``,
            ``eye_band``, ``lower_face``, ``mask``, ``sunglasses``, ``hand``, ``scarf``, ``hair``
            or ``realistic`` (those five) (e.g. ``"block:0.1,block:0.3,eye_band,mask"``). A level
            may be a fraction (0.3) or a percentage (30 or 30%).

    Returns:
        The occluders in the given order (duplicates removed).

    Raises:
        ConfigError: on an unknown kind, a missing or bad level, or a malformed item.
    """
    text = spec.strip().lower()
    if text in ("", "none"):
        return []
    if text == "default":
        return default_occluders()
    out: list[Occluder] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ConfigError(f"occluder list {spec!r} has an empty item; remove the extra comma.")
        kind, sep, arg = item.partition(":")
        kind = kind.strip()
        if kind == "realistic" and not sep:
            out += [o for o in realistic_occluders() if o not in out]
            continue
        if kind not in OCCLUDER_KINDS:
            raise ConfigError(
                f"occluder {item!r} in {spec!r} is unknown; expected block:<level>, eye_band, "
                f"lower_face, {', '.join(REALISTIC_KINDS)}, realistic, or the words default / none."
            )
        if kind == "block":
            if not sep or not arg.strip():
                raise ConfigError(
                    f"occluder {item!r} needs a level: block:<fraction of the area>, e.g. "
                    "block:0.3 (or block:30%)."
                )
            occ = Occluder.block(_parse_level(arg.strip(), item))
        else:
            if sep:
                raise ConfigError(
                    f"occluder {item!r}: {kind} takes no level; write just {kind}."
                )
            occ = Occluder(kind, kind)
        if occ not in out:
            out.append(occ)
    return out


def _parse_level(arg: str, item: str) -> float:
    percent = arg.endswith("%")
    try:
        value = float(arg.rstrip("%"))
    except ValueError:
        raise ConfigError(
            f"occluder {item!r}: level {arg!r} is not a number; expected a fraction in (0, 1] "
            "such as 0.3, or a percentage such as 30%."
        ) from None
    if percent or value > 1.0:
        value /= 100.0
    if not 0.0 < value <= 1.0 or not math.isfinite(value):
        raise ConfigError(
            f"occluder {item!r}: level {arg!r} is outside (0, 1]; expected a fraction of the "
            "image area such as 0.3, or a percentage such as 30%."
        )
    return value


def occlusion_rng(seed: int, sample_index: int, occ: Occluder) -> np.random.Generator:
    """Generator for occluding one sample, independent of batch order and workers.

    Args:
        seed: evaluation seed (non-negative).
        sample_index: index of the sample in its dataset (non-negative).
        occ: the occluder; only its kind and level enter the seed, not its name.
    """
    if seed < 0 or sample_index < 0:
        raise ValueError(
            f"occlusion_rng needs non-negative seed and sample_index, got {seed}, {sample_index}."
        )
    level = 0 if occ.level is None else int(round(occ.level * 1_000_000))
    kind = zlib.crc32(occ.kind.encode())
    return np.random.default_rng([int(seed), int(sample_index), kind, level])


def block_size(height: int, width: int, level: float) -> tuple[int, int]:
    """Height and width of a near-square block covering ``level`` of a ``height x width`` area.

    Among heights within 10 % of ``sqrt(level * H * W)`` (clipped to the image), each paired
    with the width that best matches the target area, the pair with the smallest area error
    wins (ties: the more square one). The area error is at most ``max(h, w) / 2`` pixels.
    """
    target = level * height * width
    side = math.sqrt(target)
    lo = max(1, min(math.floor(side), math.ceil(side * 0.9)))
    hi = max(1, min(height, max(math.ceil(side), math.floor(side * 1.1))))
    lo = min(lo, hi)
    best: tuple[float, int, int, int] | None = None
    for h in range(lo, hi + 1):
        w = min(width, max(1, int(round(target / h))))
        if w == width:  # wide block: recompute the height for the full width
            h = min(height, max(1, int(round(target / w))))
        cand = (abs(h * w - target), abs(h - w), h, w)
        if best is None or cand < best:
            best = cand
    assert best is not None
    return best[2], best[3]


def _rows(height: int, band: tuple[float, float]) -> tuple[int, int]:
    y0 = int(round(band[0] * height))
    y1 = int(round(band[1] * height))
    y0 = min(max(0, y0), height - 1)
    return y0, max(y0 + 1, min(height, y1))


def occluder_box(shape: tuple[int, ...], occ: Occluder, rng: np.random.Generator) -> tuple[
    int, int, int, int
]:
    """The covered rectangle ``(y0, x0, y1, x1)`` for an image of ``shape`` (draws from rng);
    blocks and bands only (a realistic occluder is no rectangle)."""
    if occ.realistic:
        raise ValueError(f"occluder {occ.name!r} is drawn from the face, not a rectangle; use apply_occluder.")
    height, width = int(shape[0]), int(shape[1])
    if occ.kind == "block":
        assert occ.level is not None
        h, w = block_size(height, width, occ.level)
        y0 = int(rng.integers(0, height - h + 1))
        x0 = int(rng.integers(0, width - w + 1))
        return y0, x0, y0 + h, x0 + w
    y0, y1 = _rows(height, EYE_BAND if occ.kind == "eye_band" else LOWER_FACE)
    return y0, 0, y1, width


def apply_occluder(
    img: np.ndarray,
    occ: Occluder,
    rng: np.random.Generator,
    fill: str | int = DEFAULT_FILL,
) -> np.ndarray:
    """Return a copy of ``img`` with ``occ`` applied.

    Args:
        img: uint8 image, (H, W) or (H, W, C).
        occ: the occluder.
        rng: generator, e.g. from :func:`occlusion_rng`; the block position is drawn first,
            then the noise fill.
        fill: ``"black"`` (default), ``"gray"``, ``"noise"``, or an integer 0-255 (checked, but
            not used by the realistic kinds, which have their own colours).

    Returns:
        A new array with the same shape and dtype.

    Raises:
        ValueError: when ``img`` is not a non-empty uint8 (H, W) or (H, W, C) array.
        ConfigError: on an unknown fill.
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(
            "apply_occluder expects a uint8 image of shape (H, W) or (H, W, C), got "
            f"{type(img).__name__} {getattr(img, 'dtype', '?')} {getattr(img, 'shape', '?')}; "
            "occlude the decoded image before resizing and normalisation."
        )
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"apply_occluder got an empty image of shape {img.shape}.")
    value = _fill_value(fill)
    if occ.realistic:
        return draw_occluder(img, occ.kind, rng)
    y0, x0, y1, x1 = occluder_box(img.shape, occ, rng)
    out = img.copy()
    region = out[y0:y1, x0:x1]
    if value is None:
        region[...] = rng.integers(0, 256, size=region.shape, dtype=np.uint8)
    else:
        region[...] = value
    return out


def _fill_value(fill: str | int) -> int | None:
    if isinstance(fill, (int, np.integer)) and not isinstance(fill, bool):
        if not 0 <= int(fill) <= 255:
            raise ConfigError(f"occlusion fill {fill} is outside 0-255.")
        return int(fill)
    if isinstance(fill, str) and fill.lower() in FILLS:
        return FILLS[fill.lower()]
    raise ConfigError(
        f"occlusion fill {fill!r} is unknown; expected black, gray, noise or an integer 0-255."
    )
