"""Pictures for the book: image grids, token alignments and attention heat maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import PIL.Image


def image_grid(
    images: Sequence[PIL.Image.Image],
    cols: int,
    scale: int = 1,
    pad: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
) -> PIL.Image.Image:
    """Tile images row by row into one picture (NEAREST upscaling keeps small pixels honest)."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    w, h = images[0].size
    w, h = w * scale, h * scale
    rows = -(-len(images) // cols)
    grid = PIL.Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), background)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile = img.convert("RGB").resize((w, h), PIL.Image.NEAREST)
        grid.paste(tile, (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


def show_grid(
    images: Sequence[PIL.Image.Image],
    titles: Sequence[str] | None = None,
    cols: int | None = None,
    size: float = 1.6,
    row_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """A matplotlib figure of images with optional titles and row labels."""
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(np.asarray(img.convert("RGB")), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    for r, label in enumerate(row_labels or []):
        axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center",
                        fontsize=8)
    fig.tight_layout()
    return fig


def plot_token_alignment(
    tokenizer: Any,
    rec_prompt: str,
    sty_prompt: str,
    content_map: Sequence[tuple[int, int]],
    width: float = 14.0,
) -> plt.Figure:
    """Both prompts as token rows, with a line from each controlled stylization token to its source.

    This is what FCC does: the maps of the joined tokens are copied from the reconstruction
    branch (top) into the stylization branch (bottom).
    """
    rows = []
    for prompt in (rec_prompt, sty_prompt):
        ids = tokenizer(prompt).input_ids
        rows.append([t.replace("</w>", "") for t in tokenizer.convert_ids_to_tokens(ids)])
    n = max(len(r) for r in rows)
    fig, ax = plt.subplots(figsize=(width, 2.4))
    ys = (1.0, 0.0)
    controlled = {s for s, _ in content_map}, {r for _, r in content_map}
    for row, y, marked in zip(rows, ys, controlled[::-1], strict=True):
        for i, tok in enumerate(row):
            colour = "#f6c86b" if i in marked else "#e8e8e8"
            ax.text(i, y, tok.replace("<|startoftext|>", "BOS").replace("<|endoftext|>", "EOS"),
                    ha="center", va="center", fontsize=8, rotation=90 if len(tok) > 6 else 0,
                    bbox=dict(boxstyle="round,pad=0.25", fc=colour, ec="#999999"))
    for s, r in content_map:
        ax.annotate("", xy=(s, ys[1] + 0.18), xytext=(r, ys[0] - 0.18),
                    arrowprops=dict(arrowstyle="->", color="#c0392b", lw=1))
    ax.text(-1.2, ys[0], "reconstruction", ha="right", va="center", fontsize=9)
    ax.text(-1.2, ys[1], "stylization", ha="right", va="center", fontsize=9)
    ax.set_xlim(-6, n)
    ax.set_ylim(-0.5, 1.5)
    ax.axis("off")
    fig.tight_layout()
    return fig


def plot_word_maps(
    image: PIL.Image.Image,
    maps: dict[str, np.ndarray],
    *,
    cols: int | None = None,
    size: float = 1.8,
    alpha: float = 0.6,
    cmap: str = "jet",
    title: str | None = None,
) -> plt.Figure:
    """The image, then one panel per word: its heat map (values in [0, 1]) over a grey copy.

    The grey underlay keeps the face readable while the colour shows where the word attends;
    maps of another resolution than the image are stretched over it, so raw layer maps work too.
    """
    if not maps:
        raise ValueError("plot_word_maps needs at least one map")
    panels = 1 + len(maps)
    cols = cols or min(panels, 6)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(size * cols, (size + 0.3) * rows + (0.4 if title else 0.1)),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    rgb = np.asarray(image.convert("RGB"))
    grey = np.asarray(image.convert("L"))
    h, w = grey.shape
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    axes.flat[0].imshow(rgb, interpolation="nearest")
    axes.flat[0].set_title("image", fontsize=9)
    for ax, (word, heat) in zip(axes.flat[1:], maps.items(), strict=False):
        ax.imshow(grey, cmap="gray", interpolation="nearest", vmin=0, vmax=255)
        ax.imshow(np.asarray(heat, dtype=float), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0,
                  extent=extent, interpolation="bilinear")
        ax.set_title(word, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
