"""The built-in ``shapes`` dataset: procedurally generated images with known factors.

Each image holds one shape on a background. Image ``i`` of a dataset with seed ``s`` is drawn from
``numpy.random.default_rng([s, i])`` alone, so any subset, any size and any order give the same
pixels, and ``image_id`` is simply ``i``.

Factors (stored as label columns)
---------------------------------
``label``        shape name (the default probe target): circle, square, triangle, cross
``shape_id``     index of the shape in :data:`SHAPES`
``hue``          hue of the shape colour in [0, 1)
``colour``       hue bucketed into six names (red, yellow, green, cyan, blue, magenta)
``center_row``   vertical centre of the shape, pixels from the top (float)
``center_col``   horizontal centre, pixels from the left (float)
``size``         radius of the shape's circumscribed circle, pixels
``rotation``     rotation in degrees (0 unless ``rotation=True``)
``background``   plain, noise or texture
``split``        ``test`` for every fifth image (``i % 5 == 0``), else ``train``
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from .errors import DataError

__all__ = ["BACKGROUNDS", "COLOURS", "SHAPES", "render_shape", "shape_factors"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "texture")
COLOURS: tuple[str, ...] = ("red", "yellow", "green", "cyan", "blue", "magenta")
_SUPERSAMPLE = 4


def shape_factors(
    index: int,
    seed: int = 0,
    size: int = 32,
    shapes: Sequence[str] = SHAPES,
    backgrounds: Sequence[str] = ("plain",),
    rotation: bool = False,
) -> dict:
    """The factors of image ``index`` (see the module docstring for their meaning)."""
    if not shapes or any(s not in SHAPES for s in shapes):
        raise DataError(f"shapes {list(shapes)!r} must be a non-empty subset of {list(SHAPES)}.")
    if not backgrounds or any(b not in BACKGROUNDS for b in backgrounds):
        raise DataError(
            f"backgrounds {list(backgrounds)!r} must be a non-empty subset of {list(BACKGROUNDS)}."
        )
    rng = np.random.default_rng([seed, index])
    shape = str(shapes[rng.integers(len(shapes))])
    radius = float(rng.uniform(0.18, 0.32) * size)
    margin = radius * 0.9
    cy = float(rng.uniform(margin, size - margin))
    cx = float(rng.uniform(margin, size - margin))
    hue = float(rng.uniform(0.0, 1.0))
    sat = float(rng.uniform(0.75, 1.0))
    val = float(rng.uniform(0.8, 1.0))
    rot = float(rng.uniform(0.0, 360.0)) if rotation else 0.0
    background = str(backgrounds[rng.integers(len(backgrounds))])
    bg_level = float(rng.uniform(0.0, 0.3))
    bg_seed = int(rng.integers(2**31))
    return {
        "image_id": int(index),
        "label": shape,
        "shape_id": SHAPES.index(shape),
        "hue": hue,
        "colour": COLOURS[int(((hue + 1 / 12) % 1.0) * 6)],
        "center_row": cy,
        "center_col": cx,
        "size": radius,
        "rotation": rot,
        "background": background,
        "split": "test" if index % 5 == 0 else "train",
        "_sat": sat,
        "_val": val,
        "_bg_level": bg_level,
        "_bg_seed": bg_seed,
    }


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(int(round(255 * c)) for c in rgb)  # type: ignore[return-value]


def _polygon(shape: str, cy: float, cx: float, r: float, rot_deg: float) -> list[tuple]:
    if shape == "square":
        base = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "triangle":
        base = [(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    else:  # cross: 12-gon of two bars with half-width w
        w = r * 0.33
        pts = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r),
               (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
        base = [(math.atan2(y, x), math.hypot(x, y)) for x, y in pts]
    a = math.radians(rot_deg)
    return [(cx + rad * math.cos(t + a), cy + rad * math.sin(t + a)) for t, rad in base]


def _background(kind: str, size: int, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((size, size, 3), level, dtype=np.float64)
    if kind == "noise":
        base = base + rng.normal(0.0, 0.08, size=(size, size, 3))
    elif kind == "texture":
        yy, xx = np.mgrid[0:size, 0:size]
        freq = rng.uniform(0.3, 0.9)
        angle = rng.uniform(0, math.pi)
        wave = np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)))
        base = base + 0.12 * wave[..., None]
    return np.clip(base, 0.0, 1.0)


def render_shape(factors: dict, size: int = 32) -> np.ndarray:
    """Render the image described by ``factors`` (from :func:`shape_factors`).

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` uint8 RGB.
    """
    s = _SUPERSAMPLE
    big = size * s
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cy, cx, r = factors["center_row"] * s, factors["center_col"] * s, factors["size"] * s
    if factors["label"] == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(factors["label"], cy, cx, r, factors["rotation"]), fill=255)
    alpha = np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255.0
    colour = np.array(_hsv_to_rgb(factors["hue"], factors["_sat"], factors["_val"])) / 255.0
    bg = _background(factors["background"], size, factors["_bg_level"], factors["_bg_seed"])
    img = bg * (1 - alpha[..., None]) + colour[None, None, :] * alpha[..., None]
    return np.round(img * 255).astype(np.uint8)


def factors_frame(rows: list[dict]) -> pd.DataFrame:
    """Public factor columns of many images as a frame (private ``_`` keys dropped)."""
    frame = pd.DataFrame(rows)
    return frame[[c for c in frame.columns if not c.startswith("_")]]
