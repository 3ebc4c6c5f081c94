"""Deterministic procedural portraits of the miniature world, in several rendering styles.

A portrait is first drawn as a *label map* at ``SS``x the output size (one integer per region:
background, shirt, hair, skin, eyes, ...). Content attributes only change that map and the
colours of its regions; a style is a function of (label map, palette) that decides how regions
are painted (shading, hatching, outlines, pixels, washes, tiles, dots). This is what keeps the
content identical across styles and the styles different in treatment only, so that judges can
read every attribute in every style and the style regardless of content.

The seed moves the head, scales it, jitters colours slightly and drives texture noise; it never
changes an attribute, and the same seed gives the same pose for any attributes and style (paired
images differ only in what was asked to differ). How far the seed moves the head is the world's
*layout* (:data:`LAYOUTS`): ``"centred"`` (a pixel or two, the first base model's world) or
``"varied"`` (several pixels, ±15 % scale, a few degrees of tilt). No caption names the layout,
so under ``"varied"`` where the head sits comes from the noise, as it does in Stable Diffusion,
and FCC has a layout to keep.

The label map is also the ground truth of *where* things are: :func:`render_regions` returns it as
:data:`REGIONS` (background, body, face, hair, eyes, mouth, glasses), at the output size and
consistent with what the style drew, for the segmentation judge and for grounding words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .attributes import (
    ATTRIBUTES,
    PRETRAIN_STYLES,
    STYLES,
    require_complete,
    sample_attributes,
    validate,
)

SIZE = 64
SS = 4  # supersampling factor of the label map; downsampling by box averages antialiases it

# Region labels of the label map.
BG, SHIRT, NECK, HAIR, SKIN, BLUSH, LENS, EYE, SHINE, MOUTH, MOUTH_IN, FRAME, HAIR_BACK = range(13)
N_LABELS = 13
FEATURES = (EYE, SHINE, MOUTH, MOUTH_IN, FRAME)  # line-art features drawn solid in every style
# Outline groups: outlines are drawn where groups meet, so facial features are not outlined.
GROUP = np.array([0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 3], dtype=np.uint8)

SKIN_RGB = {"pale": (250, 222, 204), "tan": (222, 168, 118), "brown": (150, 96, 58),
            "dark": (88, 56, 38)}
HAIR_RGB = {"black": (34, 30, 36), "blonde": (250, 214, 72), "red": (212, 58, 24),
            "grey": (150, 152, 162), "blue": (40, 96, 230)}
BG_RGB = {"blue": (118, 170, 240), "green": (120, 200, 110), "pink": (244, 156, 196),
          "yellow": (248, 224, 96), "grey": (196, 196, 196)}
FACE_RADII = {"oval": (13.0, 16.0), "round": (15.5, 15.0), "long": (11.0, 18.5),
              "square": (14.5, 15.5)}
TILT_DEG = {"left": 18.0, "upright": 0.0, "right": -18.0}
PAPER = np.array([0.97, 0.955, 0.92], dtype=np.float32)

# Regions of a portrait that words name; every label belongs to exactly one.
REGIONS: tuple[str, ...] = ("background", "body", "face", "hair", "eyes", "mouth", "glasses")
REGION_OF_LABEL = np.zeros(N_LABELS, np.uint8)
for _labels, _region in (((BG,), "background"), ((SHIRT, NECK), "body"), ((SKIN, BLUSH), "face"),
                         ((HAIR, HAIR_BACK), "hair"), ((EYE, SHINE), "eyes"),
                         ((MOUTH, MOUTH_IN), "mouth"), ((LENS, FRAME), "glasses")):
    REGION_OF_LABEL[list(_labels)] = REGIONS.index(_region)
# The head: what ``portrait`` names in a caption.
HEAD_REGIONS: tuple[str, ...] = ("face", "hair", "eyes", "mouth", "glasses")


@dataclass(frozen=True)
class LayoutJitter:
    """How far the seed moves, scales and tilts the head (uniform draws of ± these amounts)."""

    shift_x: float  # pixels (64-pixel units)
    shift_y: float
    scale: float  # fraction of the size
    tilt: float  # degrees, added to the captioned tilt
    body_follows: bool  # shoulders follow the head's shift and the neck reaches them


LAYOUTS: dict[str, LayoutJitter] = {
    "centred": LayoutJitter(1.5, 1.0, 0.04, 2.0, body_follows=False),
    "varied": LayoutJitter(5.0, 3.5, 0.15, 6.0, body_follows=True),
}
DEFAULT_LAYOUT = "centred"


def _jitter(layout: str) -> LayoutJitter:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    return LAYOUTS[layout]


@dataclass(frozen=True)
class Layout:
    """Head geometry in 64-pixel units (scaled to any size when drawing)."""

    cx: float
    cy: float
    rx: float
    ry: float
    tilt: float  # degrees, counter-clockwise (PIL convention): positive leans to the viewer's left
    eye_dx: float
    eye_y: float
    mouth_y: float
    shoulders_x: float = 32.0
    neck_bottom: float | None = None  # None: a fixed-length neck below the chin


def _layout(attrs: dict[str, str], rng: np.random.Generator, snap: bool,
            jitter: LayoutJitter = LAYOUTS["centred"]) -> Layout:
    """Head placement with seed jitter; ``snap`` centres eyes/mouth on 2-px cells (pixel art)."""
    jx, jy, js, jt = rng.uniform(-1.0, 1.0, size=4)
    scale = 1.0 + jitter.scale * js
    rx, ry = (r * scale for r in FACE_RADII[attrs["face_shape"]])
    cx, cy = 32.0 + jitter.shift_x * jx, 28.5 + jitter.shift_y * jy
    eye_dx, eye_y, mouth_y = max(5.2, 0.42 * rx), cy + 1.0, cy + 0.52 * ry
    if snap:  # round eyes on cell corners (2x2 blobs), slits and arcs on cell centres (1 row)
        odd = 0.0 if attrs["eyes"] == "round" else 1.0
        cx = 2.0 * round(cx / 2.0)
        eye_dx = 2.0 * round((eye_dx - odd) / 2.0) + odd
        eye_y = 2.0 * np.floor(eye_y / 2.0) + odd
        mouth_y = 2.0 * np.floor(mouth_y / 2.0) + 1.0
    tilt = TILT_DEG[attrs["head_tilt"]] + jitter.tilt * jt
    if not jitter.body_follows:
        return Layout(cx, cy, rx, ry, tilt, eye_dx, eye_y, mouth_y)
    return Layout(cx, cy, rx, ry, tilt, eye_dx, eye_y, mouth_y, shoulders_x=cx,
                  neck_bottom=max(cy + ry + 9.0, 55.0))


class _Pen:
    """ImageDraw on a label image, taking coordinates in 64-pixel units."""

    def __init__(self, image: Image.Image, unit: float) -> None:
        self.draw, self.u = ImageDraw.Draw(image), unit

    def box(self, cx: float, cy: float, rx: float, ry: float) -> list[float]:
        return [(cx - rx) * self.u, (cy - ry) * self.u, (cx + rx) * self.u, (cy + ry) * self.u]

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, label: int) -> None:
        self.draw.ellipse(self.box(cx, cy, rx, ry), fill=label)

    def ring(self, cx: float, cy: float, r: float, width: float, label: int) -> None:
        self.draw.ellipse(self.box(cx, cy, r, r), outline=label, width=max(1, round(width * self.u)))

    def chord(self, cx: float, cy: float, rx: float, ry: float, a0: float, a1: float,
              label: int) -> None:
        self.draw.chord(self.box(cx, cy, rx, ry), a0, a1, fill=label)

    def arc(self, cx: float, cy: float, rx: float, ry: float, a0: float, a1: float,
            width: float, label: int) -> None:
        self.draw.arc(self.box(cx, cy, rx, ry), a0, a1, fill=label,
                      width=max(1, round(width * self.u)))

    def line(self, pts: list[tuple[float, float]], width: float, label: int) -> None:
        self.draw.line([(x * self.u, y * self.u) for x, y in pts], fill=label,
                       width=max(1, round(width * self.u)))

    def rounded(self, cx: float, cy: float, rx: float, ry: float, radius: float,
                label: int) -> None:
        self.draw.rounded_rectangle(self.box(cx, cy, rx, ry), radius * self.u, fill=label)


def _cap(pen: _Pen, g: Layout, square: bool, dy: float, grow: float, a0: float,
         label: int) -> None:
    """Top of the (grown) head outline above the chord from angle ``a0`` to ``540 - a0``.

    Following the face shape keeps square faces' top corners under the hair.
    """
    cx, cy, rx, ry = g.cx, g.cy + dy, g.rx + grow, g.ry + grow
    if not square:
        pen.chord(cx, cy, rx, ry, a0, 540.0 - a0, label)
        return
    top, cut = cy - ry, cy + ry * float(np.sin(np.deg2rad(a0)))
    radius = min(4.5 + grow, 0.5 * (cut - top))
    pen.draw.rounded_rectangle([(cx - rx) * pen.u, top * pen.u, (cx + rx) * pen.u, cut * pen.u],
                               radius * pen.u, fill=label)


def _draw_hair_back(pen: _Pen, cut: str, g: Layout, square: bool) -> None:
    """Hair behind the face: the silhouette that tells the cuts apart."""
    cx, cy, rx, ry = g.cx, g.cy, g.rx, g.ry
    if cut == "long":
        pen.rounded(cx, cy + 4.0, rx + 4.0, ry + 6.0, rx + 3.5, HAIR_BACK)
        # Part the curtain under the chin so it falls as two locks, not as a beard.
        pen.draw.rectangle(pen.box(cx, cy + ry + 6.0, 0.62 * rx, 6.0), fill=0)
    elif cut == "curly":
        _cap(pen, g, square, -0.5, 1.8, 160, HAIR)
        for a in np.deg2rad(np.arange(150.0, 391.0, 20.0)):
            pen.ellipse(cx + (rx + 1.6) * np.cos(a), cy - 0.5 + (ry + 1.6) * np.sin(a), 3.3, 3.3,
                        HAIR)
    elif cut == "bun":
        _cap(pen, g, square, -0.6, 1.1, 170, HAIR)
        pen.ellipse(cx, cy - ry - 2.6, 4.8, 4.2, HAIR)
    else:  # short
        _cap(pen, g, square, -0.8, 1.8, 165, HAIR)


def _draw_fringe(pen: _Pen, cut: str, g: Layout, square: bool) -> None:
    """Hair in front of the forehead; curly fringes are bumpy, buns are slicked back (higher)."""
    if cut == "bun":
        _cap(pen, g, square, -0.3, 0.6, 214, HAIR)
        return
    _cap(pen, g, square, -0.3, 0.8, 201, HAIR)
    if cut == "curly":
        y = g.cy - 0.3 - 0.33 * (g.ry + 0.8)
        for x in np.linspace(g.cx - 0.8 * g.rx, g.cx + 0.8 * g.rx, 5):
            pen.ellipse(float(x), y, 2.6, 2.4, HAIR)


def _draw_face(pen: _Pen, shape: str, g: Layout) -> None:
    if shape == "square":
        pen.rounded(g.cx, g.cy, g.rx, g.ry, 4.5, SKIN)
    else:
        pen.ellipse(g.cx, g.cy, g.rx, g.ry, SKIN)


def _draw_eyes(pen: _Pen, eyes: str, g: Layout) -> None:
    """Round open dots with a shine, narrow slits, or closed downward arcs."""
    for side in (-1.0, 1.0):
        x, y = g.cx + side * g.eye_dx, g.eye_y
        if eyes == "round":
            pen.ellipse(x, y, 2.5, 2.6, EYE)
            pen.ellipse(x - 0.8, y - 0.9, 0.9, 0.9, SHINE)
        elif eyes == "narrow":
            pen.ellipse(x, y, 3.2, 0.95, EYE)
        else:
            pen.arc(x, y - 2.2, 3.2, 3.4, 0, 180, 1.25, EYE)  # deep enough to bend on 2-px cells


def _draw_mouth(pen: _Pen, mouth: str, g: Layout) -> None:
    """A half-moon grin, a straight line, or an open oval: distinct even on 2-px pixel cells."""
    x, y = g.cx, g.mouth_y
    if mouth == "smiling":
        pen.chord(x, y - 1.0, 5.0, 4.0, 0, 180, MOUTH)  # a grin: half-moon, flat on top
    elif mouth == "neutral":
        pen.line([(x - 4.0, y), (x + 4.0, y)], 1.5, MOUTH)
    else:
        pen.ellipse(x, y, 3.0, 2.8, MOUTH)
        pen.ellipse(x, y + 0.3, 1.9, 1.7, MOUTH_IN)


def _draw_glasses(pen: _Pen, g: Layout, frames: bool) -> None:
    """Lenses go under the eyes (``frames=False``), frames over them (``frames=True``)."""
    r = 4.3
    for side in (-1.0, 1.0):
        x = g.cx + side * g.eye_dx
        if frames:
            pen.ring(x, g.eye_y, r, 1.1, FRAME)
            pen.line([(x + side * r, g.eye_y - 0.8), (g.cx + side * (g.rx + 0.3), g.eye_y - 1.3)],
                     1.0, FRAME)
        else:
            pen.ellipse(x, g.eye_y, r, r, LENS)
    if frames:
        pen.line([(g.cx - g.eye_dx + r - 0.3, g.eye_y - 0.6),
                  (g.cx + g.eye_dx - r + 0.3, g.eye_y - 0.6)], 1.0, FRAME)


def _draw_head(attrs: dict[str, str], g: Layout, width: int) -> np.ndarray:
    """The head layer (0 = transparent), rotated about the chin for the tilt."""
    image = Image.new("L", (width, width), 0)
    pen = _Pen(image, width / 64.0)
    square = attrs["face_shape"] == "square"
    _draw_hair_back(pen, attrs["hair_cut"], g, square)
    _draw_face(pen, attrs["face_shape"], g)
    for side in (-1.0, 1.0):
        pen.ellipse(g.cx + side * 0.62 * g.rx, g.eye_y + 4.6, 2.3, 1.4, BLUSH)
    glasses = attrs["glasses"] == "glasses"
    if glasses:
        _draw_glasses(pen, g, frames=False)
    _draw_eyes(pen, attrs["eyes"], g)
    _draw_mouth(pen, attrs["mouth"], g)
    _draw_fringe(pen, attrs["hair_cut"], g, square)
    if glasses:
        _draw_glasses(pen, g, frames=True)
    if g.tilt:
        pivot = (g.cx * pen.u, (g.cy + g.ry) * pen.u)
        image = image.rotate(g.tilt, resample=Image.Resampling.NEAREST, center=pivot)
    return np.asarray(image)


def _draw_body(g: Layout, width: int) -> np.ndarray:
    """Background, shoulders in a neutral shirt and the neck; these never tilt."""
    image = Image.new("L", (width, width), BG)
    pen = _Pen(image, width / 64.0)
    pen.ellipse(g.shoulders_x, 67.0, 25.0, 15.5, SHIRT)
    if g.neck_bottom is None:
        pen.rounded(g.cx, g.cy + g.ry + 2.0, 4.2, 7.0, 1.5, NECK)
    else:  # a head moved up or shrunk keeps its neck down to the shoulders
        top = g.cy + g.ry - 5.0
        pen.rounded(g.cx, 0.5 * (top + g.neck_bottom), 4.2, 0.5 * (g.neck_bottom - top), 1.5, NECK)
    return np.asarray(image)


def label_map(attrs: dict[str, str], layout: Layout, width: int) -> np.ndarray:
    """Compose body and (tilted) head into one uint8 label map of shape (width, width)."""
    body, head = _draw_body(layout, width), _draw_head(attrs, layout, width)
    labels = body.copy()
    labels[(head == HAIR_BACK) & (body != NECK)] = HAIR
    front = (head != 0) & (head != HAIR_BACK)
    labels[front] = head[front]
    return labels


def _palette(attrs: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    """Natural colours of every label (float32 in [0, 1]), with a small seed jitter."""
    skin = np.array(SKIN_RGB[attrs["skin_tone"]], np.float32) / 255
    hair = np.array(HAIR_RGB[attrs["hair_colour"]], np.float32) / 255
    rgb = np.zeros((N_LABELS, 3), np.float32)
    rgb[BG] = np.array(BG_RGB[attrs["background"]]) / 255
    rgb[SHIRT] = (0.36, 0.40, 0.50)
    rgb[NECK] = skin * 0.86
    rgb[HAIR] = rgb[HAIR_BACK] = hair
    rgb[SKIN] = skin
    rgb[BLUSH] = 0.7 * skin + 0.3 * np.array((0.95, 0.45, 0.5))
    rgb[LENS] = 0.55 * skin + 0.45 * np.array((0.85, 0.95, 1.0))
    rgb[EYE] = (0.10, 0.08, 0.12)
    rgb[SHINE] = (0.98, 0.98, 1.0)
    rgb[MOUTH] = (0.62, 0.14, 0.20)
    rgb[MOUTH_IN] = (0.32, 0.04, 0.08)
    rgb[FRAME] = (0.12, 0.10, 0.14)
    jitter = 1.0 + rng.normal(0.0, 0.025, size=(N_LABELS, 1)).astype(np.float32)
    return np.clip(rgb * jitter, 0.0, 1.0)


# ----------------------------------------------------------------------------- image helpers


def _down(a: np.ndarray, factor: int) -> np.ndarray:
    """Box-average an (H, W[, C]) array by an integer factor (antialiasing)."""
    h, w = a.shape[:2]
    return a.reshape(h // factor, factor, w // factor, factor, *a.shape[2:]).mean(axis=(1, 3))


def _edges(groups: np.ndarray, radius: int) -> np.ndarray:
    """Boolean mask where neighbouring groups differ, thickened by ``radius`` pixels."""
    e = np.zeros(groups.shape, bool)
    e[:, 1:] |= groups[:, 1:] != groups[:, :-1]
    e[1:, :] |= groups[1:, :] != groups[:-1, :]
    for _ in range(radius):
        d = e.copy()
        d[:, 1:] |= e[:, :-1]
        d[:, :-1] |= e[:, 1:]
        d[1:, :] |= e[:-1, :]
        d[:-1, :] |= e[1:, :]
        e = d
    return e


def _boundary(groups: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another group (both sides of every border)."""
    p = np.pad(groups, 1, mode="edge")
    c = p[1:-1, 1:-1]
    return (c != p[:-2, 1:-1]) | (c != p[2:, 1:-1]) | (c != p[1:-1, :-2]) | (c != p[1:-1, 2:])


def _blur(a: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float image in [0, 1] (H, W) or (H, W, 3) via PIL (fast, uint8)."""
    image = Image.fromarray(np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    return a + (b - a) * t


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _saturate(rgb: np.ndarray, amount: float) -> np.ndarray:
    grey = _luma(rgb)[..., None]
    return np.clip(grey + (rgb - grey) * amount, 0.0, 1.0)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) in 64-pixel units, cached per size."""
    c = (np.arange(size, dtype=np.float32) + 0.5) * (64.0 / size)
    return np.meshgrid(c, c, indexing="ij")


@lru_cache(maxsize=8)
def _block_ids(width: int, factor: int) -> np.ndarray:
    """Flat index of the output pixel (block) that each label-map pixel falls in."""
    i = np.arange(width) // factor
    return ((i[:, None] * (width // factor)) + i[None, :]).ravel().astype(np.int64)


def _hist(keys: np.ndarray, n_keys: int, factor: int) -> np.ndarray:
    """Fraction of each ``factor``-block covered by each key: (H/f, W/f, n_keys) float32.

    Painting a histogram with a colour table (``hist @ table``) equals box-downsampling the
    painted full-resolution image, at a fraction of the cost of gathering 3 floats per pixel.
    """
    n = keys.shape[0] // factor
    ids = _block_ids(keys.shape[0], factor) * n_keys + keys.ravel()
    counts = np.bincount(ids, minlength=n * n * n_keys).reshape(n, n, n_keys)
    return counts.astype(np.float32) / (factor * factor)


def _paint(keys: np.ndarray, table: np.ndarray, factor: int) -> np.ndarray:
    """Box-downsampled ``table[keys]`` (table: (K <= 256, 3) floats in [0, 1]) as float32.

    PIL's palette conversion and box resize do this in C; numpy gathers are ~10x slower.
    """
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(table)] = np.clip(table * 255 + 0.5, 0, 255)
    keys = np.ascontiguousarray(keys, np.uint8)
    image = Image.frombuffer("P", keys.shape[::-1], keys.tobytes(), "raw", "P", 0, 1)
    image.putpalette(palette.tobytes())
    n = keys.shape[0] // factor
    return np.asarray(image.convert("RGB").resize((n, n), Image.Resampling.BOX), np.float32) / 255


def _masks(keys: np.ndarray, n_keys: int, factor: int, *sets: np.ndarray) -> list[np.ndarray]:
    """Coverage (0..1 per output pixel) of up to three key subsets, in one ``_paint`` call."""
    table = np.zeros((n_keys, 3), np.float32)
    for channel, members in enumerate(sets):
        table[members, channel] = 1.0
    covered = _paint(keys, table, factor)
    return [covered[..., channel] for channel in range(len(sets))]


def _with_edges(labels: np.ndarray, radius: int) -> np.ndarray:
    """Keys ``label + N_LABELS * on_outline``: separates outline pixels from region pixels."""
    return labels + N_LABELS * _edges(GROUP[labels], radius).astype(np.uint8)


def _key_sets(*labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Over ``_with_edges`` keys: (keys of the given labels, on or off outlines; outline keys)."""
    members = np.zeros(2 * N_LABELS, bool)
    members[list(labels)] = True
    members[[N_LABELS + k for k in labels]] = True
    return members, np.arange(2 * N_LABELS) >= N_LABELS


@dataclass
class _Ctx:
    """Everything a style needs besides the label map and palette."""

    size: int
    factor: int
    layout: Layout
    rng: np.random.Generator


# ----------------------------------------------------------------------------- styles


def _photo(labels: np.ndarray, pal: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Smooth shading: lit from the upper left, soft occlusion at borders, shadow, slight blur."""
    g = ctx.layout
    keys = _with_edges(labels, 0)
    img = _paint(keys, np.concatenate([pal, pal]), ctx.factor)
    bg, edge = _masks(keys, 2 * N_LABELS, ctx.factor, *_key_sets(BG))
    bg = bg[..., None]
    y, x = _grid(ctx.size)
    d2 = ((x - g.cx) / (g.rx + 4)) ** 2 + ((y - g.cy) / (g.ry + 4)) ** 2
    light = np.clip(1.10 - 0.22 * d2 - 0.07 * ((x - g.cx) + (y - g.cy)) / g.rx, 0.7, 1.15)
    occlusion = np.clip(_blur(edge, 1.0) * 2, 0, 1)
    fg = img * (light * (1 - 0.35 * occlusion))[..., None]
    vignette = (1.06 - 0.14 * (((x - 32) / 40) ** 2 + ((y - 32) / 40) ** 2))[..., None]
    shadow = _blur(np.roll(1 - bg[..., 0], (1, 2), axis=(0, 1)), 2.0)[..., None]
    out = _blur(_lerp(fg, img * vignette * (1 - 0.28 * shadow), bg), 0.55)
    return out + ctx.rng.normal(0, 0.012, out.shape).astype(np.float32)


def _sketch(labels: np.ndarray, pal: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Coloured pencil on paper: light wash, broken diagonal hatching, darker contours, grain."""
    rng, n = ctx.rng, ctx.size
    edged = labels + N_LABELS * _edges(labels, ctx.factor // 2).astype(np.uint8)
    flat = _paint(edged, np.concatenate([pal, pal]), ctx.factor)
    bg, edge = _masks(edged, 2 * N_LABELS, ctx.factor, *_key_sets(BG))
    feat = _masks(edged, 2 * N_LABELS, ctx.factor, _key_sets(*FEATURES)[0])[0]
    y, x = np.indices((n, n))
    o1, o2 = rng.integers(0, 4, size=2)
    pressure = _blur(rng.uniform(0.0, 1.0, (n, n)).astype(np.float32), 0.8)
    hatch = (((x + y + o1) % 3) == 0) * (0.5 + pressure)
    dark = np.clip(0.9 - 1.6 * _luma(flat), 0.0, 0.5)  # dark colours are pressed harder
    fill = _lerp(PAPER, flat, np.clip(0.3 + dark + 0.6 * hatch, 0, 1)[..., None])
    back_hatch = (((x - y + o2) % 4) == 0) * (0.4 + pressure)
    back = _lerp(PAPER, flat, np.clip(0.28 + 0.5 * back_hatch, 0, 1)[..., None])
    out = _lerp(fill, back, bg[..., None])
    out = _lerp(out, flat * 0.85, np.clip(feat * 1.3, 0, 1)[..., None])
    out = _lerp(out, flat * 0.45, np.clip(edge, 0, 1)[..., None] * 0.8)
    grain = rng.normal(0, 0.04, (n, n, 1)).astype(np.float32)
    return out * (1 + grain)


def _cartoon(labels: np.ndarray, pal: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Flat saturated fills and thick dark outlines, no shading."""
    ink = np.tile(np.array([(0.10, 0.07, 0.10)], np.float32), (N_LABELS, 1))
    table = np.concatenate([_saturate(pal, 1.45), ink])
    return _paint(_with_edges(labels, ctx.factor // 2 + 1), table, ctx.factor)


def _pixel_labels(labels: np.ndarray, cell: int) -> np.ndarray:
    """Downsample labels to a coarse grid, favouring small features so they survive."""
    weight = np.ones(N_LABELS, np.float32)
    weight[[EYE, MOUTH, MOUTH_IN]] = 2.2
    weight[FRAME] = 1.3
    weight[SHINE] = 0.0
    return np.argmax(_hist(labels, N_LABELS, cell) * weight, axis=-1).astype(np.uint8)


def _pixel(labels: np.ndarray, pal: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Pixel art: 2-px cells, a quantised palette, darker inner outlines."""
    grid = _pixel_labels(labels, 2 * ctx.factor)
    colours = np.round(_saturate(pal, 1.2) * 7) / 7
    colours[[EYE, SHINE]] = (0.08, 0.08, 0.12)
    colours[NECK] = colours[SKIN] * 0.8
    colours[FRAME] = (0.30, 0.36, 0.62)  # slate frames stay visible around dark eyes and skin
    img = colours[grid]
    groups = GROUP[grid]
    img[_boundary(groups) & (groups != 0) & ~np.isin(grid, FEATURES)] *= 0.55
    return _up(img, 2)


def _watercolour(labels: np.ndarray, pal: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Transparent washes that bleed and pool at their edges, on textured paper."""
    rng, n = ctx.rng, ctx.size
    keys = _with_edges(labels, 1)
    feat_keys, edge_keys = _key_sets(*FEATURES)
    feat, edge = _masks(keys, 2 * N_LABELS, ctx.factor, feat_keys, edge_keys)
    pigment = _lerp(PAPER, pal, 0.84)
    pigment[HAIR] = _lerp(PAPER, pal[HAIR], 0.95)  # hair colour must stay readable
    wash = pigment.copy()
    wash[list(FEATURES + (LENS,))] = pigment[SKIN]  # features are painted on top, not washed
    pool = np.clip(_blur(edge, 0.8) * 1.5, 0, 1)[..., None]
    fill = _blur(_paint(keys, np.concatenate([wash, wash]), ctx.factor), 0.9) * (1 - 0.22 * pool)
    bloom = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8))
    bloom = np.asarray(bloom.resize((n, n), Image.Resampling.BICUBIC), np.float32)[..., None]
    fill = _lerp(fill, PAPER, 0.22 * bloom / 255)
    feat_col = _paint(keys, np.concatenate([pal, pal]) * feat_keys[:, None] * 0.9, ctx.factor)
    feat_col = feat_col / np.maximum(feat, 1e-3)[..., None]
    alpha = np.clip(_blur(feat, 0.45) * 1.4, 0, 1)[..., None] * 0.9
    paper = _blur(rng.normal(0.5, 0.05, (n, n)).astype(np.float32), 0.5) - 0.5
    return _lerp(fill, feat_col, alpha) * (1 + paper[..., None])


def _up(a: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(a, k, axis=0), k, axis=1)


@lru_cache(maxsize=8)
def _grout(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Grout lines of 8-px and of 4-px tiles on an n x n canvas."""
    y, x = np.indices((n, n))
    return ((x % 8) == 7) | ((y % 8) == 7), ((x % 4) == 3) | ((y % 4) == 3)


def _mosaic(labels: np.ndarray, pal: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Square tesserae set in light grout: 4-px tiles, split into 2-px tiles where detail is.

    Works at twice the output size so that grout lines are half a pixel (a grid, not a cage).
    """
    rng, n = ctx.rng, 2 * ctx.size
    img = _paint(labels, _saturate(pal, 1.2), ctx.factor // 2)
    small = _down(img, 4)
    big = _down(small, 2)
    split = np.abs(small - _up(big, 2)).reshape(n // 8, 2, n // 8, 2, 3).max(axis=(1, 3, 4)) > 0.1
    big = big * (1 + rng.normal(0, 0.07, (n // 8, n // 8, 1)).astype(np.float32))
    small = small * (1 + rng.normal(0, 0.07, (n // 4, n // 4, 1)).astype(np.float32))
    split_px = _up(split, 8)
    tiles = np.where(split_px[..., None], _up(small, 4), _up(big, 8))
    grout_big, grout_small = _grout(n)
    grout = np.where(split_px, 0.5 * grout_small, 0.95 * grout_big)[..., None].astype(np.float32)
    return _down(_lerp(tiles, np.array((0.88, 0.86, 0.80), np.float32), grout), 2)


@lru_cache(maxsize=8)
def _dot_screen(width: int, factor: int) -> np.ndarray:
    """Boolean Ben-Day dot pattern (4-px hexagonal screen, dots growing towards the bottom)."""
    y, x = np.indices((width, width), dtype=np.float32)
    period = 4.0 * factor
    row = np.floor(y / period)
    dx = (x + 0.5 * period * (row % 2)) % period - period / 2
    dy = y % period - period / 2
    radius = period * (0.30 + 0.14 * (y / width))
    return dx * dx + dy * dy < radius * radius


def _halftone(labels: np.ndarray, pal: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Comic print: Ben-Day dots of ink over a pale tint, solid features, bold outlines."""
    f = ctx.factor
    ink = _saturate(pal, 1.4)
    tint = _lerp(PAPER, ink, 0.3)
    solid = np.zeros(N_LABELS, bool)
    solid[list(FEATURES)] = True
    solid |= _luma(ink) < 0.25
    tint[solid] = ink[solid]
    keys = labels + N_LABELS * _dot_screen(labels.shape[0], f).astype(np.uint8)
    keys[_edges(GROUP[labels], f // 2 + 1)] = 2 * N_LABELS
    table = np.concatenate([tint, ink, np.array([(0.05, 0.05, 0.08)], np.float32)])
    return _paint(keys, table, f)


STYLE_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray, _Ctx], np.ndarray]] = {
    "photo": _photo,
    "sketch": _sketch,
    "cartoon": _cartoon,
    "pixel": _pixel,
    "watercolour": _watercolour,
    "mosaic": _mosaic,
    "halftone": _halftone,
}
assert tuple(STYLE_FUNCS) == STYLES


# ----------------------------------------------------------------------------- public API


def _region_map(labels: np.ndarray, style: str, size: int) -> np.ndarray:
    """Region index of each output pixel, as the style drew it.

    Each pixel takes the region covering most of it; pixel art takes its own 2-px cell labels,
    which move small features onto the grid.
    """
    if style == "pixel":
        return _up(REGION_OF_LABEL[_pixel_labels(labels, 2 * SS)], 2)
    coverage = _hist(REGION_OF_LABEL[labels], len(REGIONS), labels.shape[0] // size)
    return np.argmax(coverage, axis=-1).astype(np.uint8)


def _render(attributes: dict[str, str], style: str, seed: int, size: int, layout: str
            ) -> tuple[Image.Image, np.ndarray]:
    validate(style, attributes)
    require_complete(attributes)
    if size % 4 or size <= 0:
        raise ValueError(f"size must be a positive multiple of 4, got {size}")
    rng = np.random.default_rng(seed)  # pose and colour jitter: same for every style/attribute
    geometry = _layout(attributes, rng, snap=style == "pixel", jitter=_jitter(layout))
    pal = _palette(attributes, rng)
    labels = label_map(attributes, geometry, size * SS)
    texture = np.random.default_rng([seed, STYLES.index(style)])
    out = STYLE_FUNCS[style](labels, pal, _Ctx(size, SS, geometry, texture))
    image = Image.fromarray(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    return image, labels


def render(attributes: dict[str, str], style: str, seed: int = 0, size: int = SIZE,
           layout: str = DEFAULT_LAYOUT) -> Image.Image:
    """Render a portrait with the given attributes in ``style``; deterministic in all arguments.

    ``size`` must be a multiple of 4 (styles work on 2- and 4-px cells).
    """
    return _render(attributes, style, seed, size, layout)[0]


def render_regions(attributes: dict[str, str], style: str, seed: int = 0, size: int = SIZE,
                   layout: str = DEFAULT_LAYOUT) -> tuple[Image.Image, np.ndarray]:
    """The portrait of :func:`render` and its region map: uint8 (size, size), values index
    :data:`REGIONS`."""
    image, labels = _render(attributes, style, seed, size, layout)
    return image, _region_map(labels, style, size)


def region_masks(regions: np.ndarray) -> dict[str, np.ndarray]:
    """One boolean mask per region name (plus ``"head"``) from a region map."""
    masks = {name: regions == k for k, name in enumerate(REGIONS)}
    masks["head"] = np.isin(regions, [REGIONS.index(r) for r in HEAD_REGIONS])
    return masks


def _draw_seed(seed: int, style: str | None, overrides: dict[str, str] | None,
               styles: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    validate(style, overrides or {})
    rng = np.random.default_rng(seed)
    attrs = sample_attributes(rng)
    if style is None:
        style = styles[int(rng.integers(len(styles)))]
    attrs.update(overrides or {})
    return style, attrs


def render_seed(
    seed: int,
    style: str | None = None,
    overrides: dict[str, str] | None = None,
    styles: tuple[str, ...] = STYLES,
    layout: str = DEFAULT_LAYOUT,
) -> tuple[Image.Image, str, dict[str, str]]:
    """Draw attributes (and the style, if None, from ``styles``) from ``seed``; then render."""
    style, attrs = _draw_seed(seed, style, overrides, styles)
    return render(attrs, style, seed, layout=layout), style, attrs


def render_seed_regions(
    seed: int,
    style: str | None = None,
    overrides: dict[str, str] | None = None,
    styles: tuple[str, ...] = STYLES,
    layout: str = DEFAULT_LAYOUT,
) -> tuple[Image.Image, np.ndarray, str, dict[str, str]]:
    """:func:`render_seed` with the region map of :func:`render_regions`."""
    style, attrs = _draw_seed(seed, style, overrides, styles)
    image, regions = render_regions(attrs, style, seed, layout=layout)
    return image, regions, style, attrs


def render_batch(
    seeds, styles: tuple[str, ...] = PRETRAIN_STYLES, layout: str = DEFAULT_LAYOUT,
    regions: bool = False,
) -> tuple[np.ndarray, ...]:
    """Render many seeds (style drawn per seed from ``styles``) into a uint8 (N, 64, 64, 3) array.

    Returns ``(images, styles, attributes)``, and the uint8 (N, 64, 64) region maps last when
    ``regions`` is set.
    """
    images, chosen, attrs, maps = [], [], [], []
    for seed in seeds:
        style, a = _draw_seed(int(seed), None, None, styles)
        image, labels = _render(a, style, int(seed), SIZE, layout)
        images.append(np.asarray(image))
        chosen.append(style)
        attrs.append(a)
        if regions:
            maps.append(_region_map(labels, style, SIZE))
    batch = np.stack(images) if images else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    if not regions:
        return batch, chosen, attrs
    return batch, chosen, attrs, (np.stack(maps) if maps else np.zeros((0, SIZE, SIZE), np.uint8))


__all__ = ["SIZE", "ATTRIBUTES", "REGIONS", "LAYOUTS", "render", "render_regions",
           "render_seed", "render_seed_regions", "render_batch", "region_masks", "label_map",
           "Layout"]
