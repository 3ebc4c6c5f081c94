"""Grounded words: a pretraining loss that puts each word's cross-attention where its thing is.

Stable Diffusion's cross-attention maps pick out what each word names; prompt-to-prompt, DAAM and
StyO's FCC all stand on that. A small text-to-image model trained from scratch on captions of
centred heads has no reason to learn it: its maps come out flat, with most of the attention on
the padding after the end token (a causal text encoder lets those positions summarise the whole
caption). Following TokenCompose (Wang et al., CVPR 2024), pretraining can add, beside the
denoising loss:

- a **token loss** per grounded word: ``(1 - mass of its map inside its region / mass of its
  map)²``, which moves the word's attention into its region;
- a **pixel loss** per grounded word: binary cross-entropy between its map (scaled to its maximum)
  and the region's coverage, which makes the map cover the region rather than one spot of it;
- a **threshold loss** per grounded word (ours, optional): one minus the soft IoU between its
  region and the map as DAAM scores it, min-max normalised and thresholded at 0.4 (a sigmoid in
  place of the step). The pixel loss asks the map to cover its region in proportion to its
  maximum; DAAM keeps only the cells above 40 % of the range, so a map that peaks in the middle
  of a face and falls off gently covers a spot of it. This term asks for the shape DAAM reads;
- a **padding loss**: the attention mass on the positions after the end token, for captioned
  images only (the empty prompt, which guidance relies on, is nearly all padding and is left as
  it is).

Maps are averaged over heads and over the cross-attention layers at the two finest resolutions
(the coarser one upsampled), as DAAM aggregates them. Which words are grounded to which region is
read off the caption (:func:`grounded_words`): attribute values and their nouns (``red hair`` →
hair), ``glasses`` → glasses, ``left tilt``, ``portrait`` and a person's name → the whole head. Words after
``not`` name what is absent and are left free, as are the style words, which act everywhere.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..attention import MapsProcessor, install_processors
from .people import NAMES
from .render import HEAD_REGIONS, REGIONS

GROUNDING_THRESHOLD = 0.4  # DAAM's tau: a normalised heat map's pixels above it are the word's

# Region targets: the renderer's regions, then the head (their union of HEAD_REGIONS).
TARGETS: tuple[str, ...] = (*REGIONS, "head")
# The targets a caption's words name (grounded_words; no word names the body), in the order the
# word-map measurements report them.
WORD_TARGETS: tuple[str, ...] = ("hair", "eyes", "mouth", "glasses", "face", "background", "head")
_NOUN_REGION = {"hair": "hair", "haircut": "hair", "eyes": "eyes", "mouth": "mouth",
                "face": "face", "skin": "face", "background": "background", "tilt": "head"}
_PEOPLE = frozenset(NAMES)  # a person's name stands for the whole head, as ``portrait`` does


def grounded_words(caption: str) -> list[tuple[int, str]]:
    """``(word position, target)`` for every word of a caption that names a visible region.

    The content part of ``a drawing [with S style] of <phrases> portrait`` is read phrase by
    phrase: ``<value> <noun>`` grounds both words to the noun's region, ``glasses`` to the glasses,
    ``portrait`` to the head; a phrase after ``not`` and ``no glasses`` are not grounded.
    """
    words = caption.split()
    if "of" not in words:
        return []
    out: list[tuple[int, str]] = []
    negated = False
    i = words.index("of") + 1
    while i < len(words):
        word = words[i]
        if word == "portrait":
            out.append((i, "head"))
            i += 1
        elif word == "not":
            negated = True
            i += 1
        elif word == "no":
            negated, i = False, i + 2  # "no glasses": nothing to point at
        elif word in _PEOPLE:
            if not negated:
                out.append((i, "head"))
            negated, i = False, i + 1
        elif word == "glasses":
            if not negated:
                out.append((i, "glasses"))
            negated, i = False, i + 1
        elif i + 1 < len(words) and words[i + 1] in _NOUN_REGION:
            if not negated:
                region = _NOUN_REGION[words[i + 1]]
                out += [(i, region), (i + 1, region)]
            negated, i = False, i + 2
        else:
            i += 1
    return out


def target_coverage(regions: torch.Tensor, size: int) -> torch.Tensor:
    """Share of each ``size``² cell covered by each target: float (N, len(TARGETS), size, size).

    ``regions`` is a uint8 (N, H, W) region map (values index REGIONS).
    """
    one_hot = F.one_hot(regions.long(), len(REGIONS)).permute(0, 3, 1, 2).float()
    cover = F.adaptive_avg_pool2d(one_hot, size)
    head = cover[:, [REGIONS.index(r) for r in HEAD_REGIONS]].sum(1, keepdim=True)
    return torch.cat([cover, head], 1)


class MapStore:
    """Cross-attention probabilities of one UNet call, kept with their gradients."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] = []  # each [batch, pixels, tokens], head-averaged

    def clear(self) -> None:
        self.maps.clear()


class GroundingProcessor(MapsProcessor):
    """Hands each cross-attention layer's head-averaged maps, with their gradients, to a store."""

    def __init__(self, store: MapStore, base: Any) -> None:
        super().__init__(base)
        self.store = store

    def maps(self, probs: torch.Tensor) -> torch.Tensor:
        self.store.maps.append(probs.mean(1))
        return probs


def install(unet: torch.nn.Module) -> MapStore:
    """Give every cross-attention layer a :class:`GroundingProcessor`; self-attention keeps its own."""
    store = MapStore()
    install_processors(unet, lambda _, base: GroundingProcessor(store, base))
    return store


def word_maps(store: MapStore, size: int) -> torch.Tensor:
    """The maps of the layers at the two finest resolutions, averaged: (batch, size², tokens)."""
    sides = sorted({int(round(m.shape[1] ** 0.5)) for m in store.maps}, reverse=True)[:2]
    picked = []
    for m in store.maps:
        side = int(round(m.shape[1] ** 0.5))
        if side not in sides:
            continue
        if side != size:
            grid = m.transpose(1, 2).reshape(m.shape[0], m.shape[2], side, side)
            grid = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
            m = grid.flatten(2).transpose(1, 2)
        picked.append(m)
    return torch.stack(picked).mean(0)


def grounding_loss(maps: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor,
                   targets: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Token loss + pixel loss, averaged over the grounded words of a batch.

    ``maps`` (batch, pixels, tokens); word ``k`` is token ``tokens[k]`` of row ``rows[k]``, to be
    grounded in target ``targets[k]`` of ``coverage`` (batch, len(TARGETS), side, side).
    """
    if len(rows) == 0:
        return maps.sum() * 0.0
    word = maps[rows, :, tokens]  # (K, pixels)
    region = coverage[rows, targets].flatten(1)  # (K, pixels)
    mass = word.sum(1).clamp_min(1e-8)
    token = (1.0 - (word * region).sum(1) / mass) ** 2
    scaled = (word / word.amax(1, keepdim=True).clamp_min(1e-8)).clamp(1e-6, 1 - 1e-6)
    pixel = F.binary_cross_entropy(scaled, region, reduction="none").mean(1)
    return (token + pixel).mean()


def target_weights(weights: dict[str, float], device: str | torch.device = "cpu") -> torch.Tensor | None:
    """A weight per index of :data:`TARGETS` (1 where ``weights`` names none), or None for no
    weights at all, so that an unweighted loss is computed exactly as before."""
    if not weights:
        return None
    return torch.tensor([float(weights.get(t, 1.0)) for t in TARGETS], device=device)


def threshold_loss(maps: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor,
                   targets: torch.Tensor, coverage: torch.Tensor, temperature: float = 0.1,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """1 - soft IoU of each grounded word's min-max normalised map, thresholded at DAAM's 0.4 by a
    sigmoid of ``temperature``, with its region's coverage; averaged over the words of a batch,
    each word's term times its entry of ``weights`` (K,) when given.

    Arguments as :func:`grounding_loss`. The soft step keeps a gradient on the cells near the
    threshold, which are the ones that decide whether a region's border is in the word's map.

    ``coverage`` finer than the maps (the picture's own masks) scores the maps as DAAM does,
    upsampled bicubically to the picture: there a small region (the eyes) is a sharp shape that a
    map of graded cells can trace to within a pixel, where at the cells' own side it is a few
    partly covered cells whose best map is their coverage.
    """
    if len(rows) == 0:
        return maps.sum() * 0.0
    word = maps[rows, :, tokens]  # (K, pixels)
    side, size = int(round(word.shape[1] ** 0.5)), coverage.shape[-1]
    if size != side:
        word = F.interpolate(word.view(-1, 1, side, side), size=(size, size), mode="bicubic",
                             align_corners=False).flatten(1)
    region = coverage[rows, targets].flatten(1)
    low, high = word.amin(1, keepdim=True), word.amax(1, keepdim=True)
    on = torch.sigmoid(((word - low) / (high - low).clamp_min(1e-8) - GROUNDING_THRESHOLD) / temperature)
    inter = (on * region).sum(1)
    union = (on + region - on * region).sum(1).clamp_min(1e-8)
    miss = 1.0 - inter / union
    return (miss if weights is None else miss * weights).mean()


def padding_mass(store: MapStore, eos: torch.Tensor, captioned: torch.Tensor,
                 allowance: float = 0.0) -> torch.Tensor:
    """Mean attention on the positions after each row's end token, over captioned rows and every
    cross-attention layer; with an ``allowance``, only each row's mass beyond it (a hinge).

    Stable Diffusion's own maps put some mass outside the words too, and the positions after the
    end token are where a causal text encoder summarises the caption: an allowance keeps a little
    of that summary instead of forcing every colour and pose through single words.
    """
    if not bool(captioned.any()):
        return store.maps[0].sum() * 0.0
    masses = []
    for m in store.maps:
        after = torch.arange(m.shape[-1], device=m.device)[None, :] > eos[:, None]  # (batch, tokens)
        masses.append((m * after[:, None, :]).sum(-1).mean(1)[captioned])
    per_row = torch.stack(masses).mean(0)
    return (per_row - allowance).clamp_min(0.0).mean()


def word_weight(caption: str, position: int, weights: dict[str, float]) -> float:
    """The weight ``weights`` gives the grounded word at ``position``: its own, or for a noun its
    value's (``closed eyes``: both words take ``closed``'s), else 1.

    A region's words name shapes of different difficulty (a closed eye is a line one or two
    pixels tall, a round one a disc), so a loss can weight a shape's words rather than the region.
    """
    words = caption.split()
    word = words[position]
    if word in weights:
        return float(weights[word])
    if word in _NOUN_REGION and position > 0 and words[position - 1] in weights:
        return float(weights[words[position - 1]])
    return 1.0


def batch_groundings(captions: list[str], ids: torch.Tensor, eos_token_id: int,
                     word_weights: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The grounded words of tokenised captions as index tensors (rows, tokens, targets), the
    end-token position of each row and which rows have a caption; with ``word_weights``, each
    grounded word's weight (:func:`word_weight`) as ``g_weights``.

    Every word of the world's vocabulary is one token, so word ``i`` is token ``i + 1`` (after
    the start token); a caption whose token count says otherwise is an error.
    """
    rows, tokens, targets, weights = [], [], [], []
    eos = (ids == eos_token_id).int().argmax(1)
    for b, text in enumerate(captions):
        if int(eos[b]) != len(text.split()) + 1:
            raise ValueError(f"caption {text!r} is not one token per word")
        for position, target in grounded_words(text):
            rows.append(b)
            tokens.append(position + 1)
            targets.append(TARGETS.index(target))
            if word_weights:
                weights.append(word_weight(text, position, word_weights))
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    out = {"g_rows": as_long(rows), "g_tokens": as_long(tokens), "g_targets": as_long(targets),
           "eos": eos.long(), "captioned": torch.tensor([bool(c) for c in captions])}
    if word_weights:
        out["g_weights"] = torch.tensor(weights, dtype=torch.float32)
    return out


def grounded_vocabulary() -> frozenset[str]:
    """Every word a caption can ground: attribute values, their nouns, ``glasses``, ``portrait``."""
    from .attributes import ATTRIBUTES

    return frozenset({v for values in ATTRIBUTES.values() for v in values} | set(_NOUN_REGION)
                     | {"glasses", "portrait"})
