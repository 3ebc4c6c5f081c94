"""Paint one picture's texture onto another face, with no network: the target-side auxiliary set.

IDL's auxiliary portraits show the *source* style on many faces, so ``[S_src]`` learns the style
apart from the source's face. The target has one picture, so ``[S_tgt]`` learns the target's face
with its style. :func:`texture_transfer` makes pictures of the target's texture on the auxiliary
faces by two classical steps that need nothing but the two images:

1. **Quilting** (Efros & Freeman, *Image Quilting for Texture Synthesis and Transfer*, 2001): the
   content picture is covered, block by block in reading order, with blocks cut from the style
   picture, each chosen to match the content's brightness and edges at that place and to agree
   with the blocks already laid where they overlap.
2. **Detail transfer** (Petschnigg et al., *Digital Photography with Flash and No-Flash Image
   Pairs*, 2004): the result keeps the content's colours, averaged over the quilt's own regions (a
   joint bilateral filter guided by the quilt, so a tile or a dot takes one colour), plus the
   quilt's fine detail (the quilt minus its blur: the grout, the dots, the strokes).

Everything is NumPy on the CPU and seeded; the inputs are never written to.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from tqdm.auto import tqdm

__all__ = ["painted_portraits", "texture_transfer"]

MAX_CANDIDATES = 4096  # style blocks compared at each place; more positions are subsampled


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def _blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    image = Image.fromarray((pixels * 255).round().clip(0, 255).astype(np.uint8))
    return _pixels(image.filter(ImageFilter.GaussianBlur(sigma)))


def _guide(pixels: np.ndarray, edge_weight: float) -> np.ndarray:
    """Standardised brightness and edge strength: what a block must match where it is laid."""
    lum = pixels.mean(axis=2)
    gy, gx = np.gradient(lum)
    edge = np.hypot(gx, gy)
    return np.stack([(lum - lum.mean()) / (lum.std() + 1e-6),
                     edge / (edge.std() + 1e-6) * edge_weight], axis=2)


def _starts(size: int, block: int, step: int) -> list[int]:
    starts = list(range(0, size - block + 1, step))
    return starts if starts[-1] == size - block else [*starts, size - block]


def _quilt(style: np.ndarray, content: np.ndarray, block: int, rng: np.random.Generator,
           sigma: float = 1.5, edge_weight: float = 2.0, match_weight: float = 0.7) -> np.ndarray:
    """Step 1: the content's layout covered with the style's own blocks."""
    style_blur, content_blur = _blur(style, sigma), _blur(content, sigma)
    style_guide, content_guide = _guide(style_blur, edge_weight), _guide(content_blur, edge_weight)
    detail = style - style_blur  # overlaps are compared on detail, so blocks join where the texture does
    last = style.shape[0] - block
    stride = 1
    while ((last // stride) + 1) ** 2 > MAX_CANDIDATES:
        stride += 1
    corners = [(i, j) for i in range(0, last + 1, stride) for j in range(0, last + 1, stride)]
    cut = lambda a: np.stack([a[i:i + block, j:j + block] for i, j in corners])  # noqa: E731
    blocks, detail_blocks, guide_blocks = cut(style), cut(detail), cut(style_guide)

    height, width = content.shape[:2]
    quilt = np.zeros((height, width, 3), np.float32)
    quilt_detail = np.zeros_like(quilt)
    laid = np.zeros((height, width), bool)
    step = block - (3 * block) // 8
    for y in _starts(height, block, step):
        for x in _starts(width, block, step):
            here = (slice(y, y + block), slice(x, x + block))
            match = ((guide_blocks - content_guide[here]) ** 2).mean(axis=(1, 2, 3))
            seen = laid[here]
            overlap = (((detail_blocks - quilt_detail[here]) ** 2).mean(axis=3) * seen).sum(axis=(1, 2))
            overlap = overlap / max(seen.sum(), 1)
            error = (match_weight * match / (match.std() + 1e-8)
                     + (1 - match_weight) * overlap / (overlap.std() + 1e-8))
            choice = rng.choice(np.flatnonzero(error <= error.min() + 0.05 * error.std()))
            fresh = ~seen
            quilt[here][fresh] = blocks[choice][fresh]
            quilt_detail[here][fresh] = detail_blocks[choice][fresh]
            laid[here] = True
    return quilt


def _joint_bilateral(values: np.ndarray, guide: np.ndarray, radius: int, sigma_range: float = 0.06
                     ) -> np.ndarray:
    """Each pixel's ``values`` averaged over nearby pixels whose ``guide`` colour is like its own."""
    height, width = guide.shape[:2]
    sigma_space = radius

    def padded(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((radius, radius), (radius, radius), (0, 0)), mode="edge")

    values_p, guide_p = padded(values), padded(guide)
    total = np.zeros_like(values)
    weight = np.zeros((height, width, 1), np.float32)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            window = (slice(radius + dy, radius + dy + height), slice(radius + dx, radius + dx + width))
            likeness = ((guide_p[window] - guide) ** 2).sum(axis=2, keepdims=True)
            w = np.exp(-(dy * dy + dx * dx) / (2 * sigma_space ** 2)) * np.exp(-likeness / (2 * sigma_range ** 2))
            total += w * values_p[window]
            weight += w
    return total / weight


def texture_transfer(style: Image.Image, content: Image.Image, *, seed: int = 0) -> Image.Image:
    """``content``'s face drawn with ``style``'s texture (both square, the same size).

    The blocks are an eighth of the picture's side (8 pixels at 64², 64 at 512²), so a block holds a
    few of the style's tiles, dots or strokes; ``seed`` picks among equally good blocks.
    """
    if style.size != content.size or style.size[0] != style.size[1]:
        raise ValueError(f"texture_transfer needs two square pictures of one size, got {style.size} "
                         f"and {content.size}; resize them to the model's size first")
    if style.size[0] < 16:
        raise ValueError(f"pictures of {style.size[0]} pixels are too small to cut blocks from (16 or more)")
    style_px, content_px = _pixels(style), _pixels(content)
    block = max(8, style.size[0] // 8)
    quilt = _quilt(style_px, content_px, block, np.random.default_rng(seed))
    radius = max(2, block // 4)
    out = _joint_bilateral(content_px, quilt, radius) + quilt - _blur(quilt, 1.5 * block / 8)
    return Image.fromarray((out * 255).clip(0, 255).astype(np.uint8))


def painted_portraits(target: Image.Image, aux: list[Image.Image], n: int, *, progress: bool = False
                      ) -> list[Image.Image]:
    """The first ``n`` auxiliary portraits painted with the target's texture (seed = index).

    The work grows faster than the picture's area (``benchmarks/results/texture-transfer-cost.md``
    times it), so a set at Stable Diffusion's size takes long enough to need the progress bar.
    """
    if not 0 < n <= len(aux):
        raise ValueError(f"cannot paint {n} portraits from an auxiliary set of {len(aux)}; "
                         f"choose target_aux between 1 and {len(aux)}")
    portraits = tqdm(aux[:n], desc="painting", unit="portrait", disable=not progress)
    return [texture_transfer(target, portrait, seed=i) for i, portrait in enumerate(portraits)]
