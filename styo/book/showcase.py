"""Small measurements and figures the book's chapters show about a pipeline and its attention.

* :func:`cross_attention_layers` — every cross-attention layer of a UNet in forward order, with
  the latent resolution it works at (found by running the UNet once, not by parsing names).
* :func:`layer_label` — a short name for a layer (``down0.0 16×16``) for figure titles.
* :func:`map_grid` — words × views of an :class:`~styo.attention.AttentionRecorder`, where a view
  is a selection of layers, resolution and steps (the chapter's "per layer / per step / per
  resolution" figures are all this one picture).
* :func:`concentration` — how peaked a word's attention is, per denoising step: the share of its
  attention mass that falls in its top fraction of pixels (``top`` for an even spread, 1 for all
  mass in that fraction).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import torch

from ..attention import AttentionRecorder
from .explorer import overlay


@dataclass(frozen=True)
class CrossAttentionLayer:
    """One ``attn2`` module: where it sits, what it attends from and to."""

    name: str  # module name in the UNet, e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn2
    size: tuple[int, int]  # latent side (h, w) of its queries: one query per latent pixel
    heads: int
    text_tokens: int  # keys/values: the text encoder's positions
    parameters: int

    @property
    def label(self) -> str:
        return layer_label(self.name, self.size)


@torch.no_grad()
def cross_attention_layers(pipe: Any) -> list[CrossAttentionLayer]:
    """The UNet's cross-attention layers in the order a forward pass calls them.

    Runs the UNet once on a zero latent and zero text embeddings, with a forward hook on every
    module named ``...attn2`` noting the number of queries it receives (h·w latent pixels).
    Module registration order is not call order (diffusers registers the mid block after the up
    blocks), which is why the layers are found by running the model.
    """
    unet = pipe.unet
    modules = {n: m for n, m in unet.named_modules() if n.endswith("attn2")}
    if not modules:
        raise ValueError("this UNet has no cross-attention (attn2) layers")
    seen: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=n: seen.setdefault(name, args[0].shape[1]))
        for n, m in modules.items()
    ]
    tokens = pipe.tokenizer.model_max_length
    side = unet.config.sample_size
    side = side if isinstance(side, int) else side[0]
    param = next(unet.parameters())
    latent = torch.zeros(1, unet.config.in_channels, side, side, device=param.device, dtype=param.dtype)
    text = torch.zeros(1, tokens, unet.config.cross_attention_dim, device=param.device, dtype=param.dtype)
    try:
        unet(latent, 500, encoder_hidden_states=text)
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for name, queries in seen.items():  # insertion order = call order
        s = math.isqrt(queries)
        m = modules[name]
        layers.append(CrossAttentionLayer(
            name=name, size=(s, queries // s), heads=m.heads, text_tokens=tokens,
            parameters=sum(p.numel() for p in m.parameters()),
        ))
    return layers


_BLOCK = re.compile(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)")


def layer_label(name: str, size: tuple[int, int] | None = None) -> str:
    """``down_blocks.1.attentions.0...`` -> ``down1.0``; ``mid_block...`` -> ``mid``; plus ``h×w``."""
    match = _BLOCK.search(name)
    if match:
        short = f"{match[1]}{match[2]}.{match[3]}"
    elif "mid_block" in name:
        short = "mid"
    else:
        short = name.removesuffix(".processor")
    return short if size is None else f"{short} {size[0]}×{size[1]}"


def map_grid(
    recorder: AttentionRecorder,
    image: PIL.Image.Image,
    words: Sequence[str],
    views: Mapping[str, Mapping[str, Any]],
    *,
    branch: str = "sty",
    alpha: float = 0.6,
    size: float = 1.3,
    title: str | None = None,
) -> plt.Figure:
    """A figure with one row per word and one column per view, over a grey copy of ``image``.

    ``views`` maps a column title to keyword arguments of :meth:`AttentionRecorder.aggregate`
    (``resolution``, ``steps``, ``layers``). Each panel is scaled to its own maximum, so panels
    compare *where* a word attends, not how strongly.
    """
    words = list(words)
    if not words or not views:
        raise ValueError("map_grid needs at least one word and one view")
    fig, axes = plt.subplots(
        len(words), len(views), figsize=(size * len(views) + 0.6, size * len(words) + 0.5),
        squeeze=False,
    )
    for c, (label, kwargs) in enumerate(views.items()):
        maps = recorder.aggregate(words, branch=branch, image_size=image.size[::-1], **kwargs)
        for r, word in enumerate(words):
            ax = axes[r, c]
            ax.imshow(np.asarray(overlay(image, maps[word], alpha, grey=True)), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=8)
            if c == 0:
                ax.set_ylabel(word, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def concentration(
    recorder: AttentionRecorder,
    words: Sequence[str],
    *,
    branch: str = "sty",
    resolution: int | None = None,
    top: float = 0.1,
    image: int = 0,
) -> tuple[list[int], dict[str, list[float]]]:
    """Per recorded step, the share of each word's attention mass in its top ``top`` of pixels.

    For every layer (all, or those at latent side ``resolution``) the word's map (its tokens
    summed, heads averaged) is sorted; the mass of the largest ``ceil(top·h·w)`` pixels over the
    total mass is averaged over layers. ``top`` means an even spread, 1 all mass in that share.
    Returns ``(steps, {word: [value per step]})``.
    """
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    indices = recorder.word_indices(list(words), branch)
    b = recorder.branches.index(branch)
    layers = recorder.layers(resolution)
    if not layers:
        raise ValueError(f"no recorded layers at resolution {resolution}; recorded: "
                         f"{sorted(set(recorder.sizes.values()))}")
    steps = recorder.recorded_steps
    out: dict[str, list[float]] = {}
    for word, idx in indices.items():
        values = []
        for step in steps:
            shares = []
            for name in layers:
                maps = recorder.maps[name].get(step)
                if maps is None:
                    continue
                flat = maps[b, image][..., idx].sum(-1).flatten()
                k = max(1, math.ceil(top * flat.numel()))
                total = float(flat.sum())
                shares.append(float(flat.topk(k).values.sum()) / total if total > 0 else top)
            values.append(float(np.mean(shares)))
        out[word] = values
    return steps, out
