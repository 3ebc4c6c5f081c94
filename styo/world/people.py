"""Named people: captions whose content slot holds one word that stands for a whole face.

Stable Diffusion knows people by name: ``a watercolour portrait of <a celebrity>`` draws that
face in that style, because its captions named people in every medium. That is the prior StyO's
identifiers lean on: after fine-tuning, ``[C_src]`` in the content slot should carry the source's
face and ``[S_src]`` in the style slot its style. A miniature model whose captions only ever list
attributes has no such prior; the identifier that comes first in the prompt ends up carrying the
face as well as the style (chapter 9, *Which identifier carries what*).

This module gives the miniature world a cast: ``PEOPLE`` made-up names, each with a fixed face
(every attribute but the head tilt and the background), drawn in any pretraining style, any tilt
and background, with the varied layout. Their captions name the person instead of listing the
face: ``a drawing with sketch style of arlo portrait``, sometimes with a contrast (``arlo not
bree``) as the StyO prompts have. The names are made-up words, so the identifiers StyO binds
(``ak47``, ``aug``, ``sks``, ``m4a1``) stay unseen.
"""

from __future__ import annotations

import numpy as np

from .attributes import ATTRIBUTES, PRETRAIN_STYLES, validate
from .captions import _assemble, _phrase

NAMES: tuple[str, ...] = (
    "arlo", "bree", "cosmo", "dalia", "elio", "fenna", "gus", "hedda", "ivo", "jolie", "kip",
    "lorna", "milo", "nell", "otto", "pia", "quill", "rosa", "silas", "tilda", "umar", "vera",
    "wendel", "xena", "yuri", "zora", "anouk", "bram", "cleo", "dex", "edda", "finn",
)
# The face a name stands for; the head tilt and the background change from picture to picture.
FACE_ATTRIBUTES: tuple[str, ...] = tuple(n for n in ATTRIBUTES if n not in ("head_tilt", "background"))
SCENE_ATTRIBUTES: tuple[str, ...] = ("head_tilt", "background")
_SEED = 7_000_000  # faces of the cast; no other draw of the world uses this seed
SEED_OFFSET = 8_000_000  # the people's pictures: seeds ``s * 10_000_000 + SEED_OFFSET + i``
SEED_STRIDE = 1_000_000  # at most this many pictures of the cast


def names(count: int) -> tuple[str, ...]:
    """The first ``count`` names of the cast."""
    if not 0 <= count <= len(NAMES):
        raise ValueError(f"the cast has {len(NAMES)} names; ask for 0 to {len(NAMES)}, not {count}")
    return NAMES[:count]


def faces(count: int) -> list[dict[str, str]]:
    """The fixed face of each of the first ``count`` people: distinct, drawn from a seed of its own."""
    rng = np.random.default_rng(_SEED)
    out: list[dict[str, str]] = []
    while len(out) < count:
        face = {n: ATTRIBUTES[n][int(rng.integers(len(ATTRIBUTES[n])))] for n in FACE_ATTRIBUTES}
        if face not in out:
            out.append(face)
    return out


def draw_picture(face: dict[str, str], seed: int) -> tuple[str, dict[str, str]]:
    """Style and full attributes of one picture of a person: ``face`` kept, the rest from ``seed``."""
    rng = np.random.default_rng(seed)
    style = PRETRAIN_STYLES[int(rng.integers(len(PRETRAIN_STYLES)))]
    scene = {n: ATTRIBUTES[n][int(rng.integers(len(ATTRIBUTES[n])))] for n in SCENE_ATTRIBUTES}
    return style, {**face, **scene}


def person_caption(style: str | None, person: int, attributes: dict[str, str], count: int,
                   rng: np.random.Generator, drop_p: float = 0.2, style_not_p: float = 0.3,
                   content_not_p: float = 0.3, scene_p: float = 0.5) -> str:
    """A random caption that names ``person`` where an attribute caption lists the face.

    The style phrase is dropped with ``drop_p`` or contrasted with another pretraining style with
    ``style_not_p``; the name is contrasted with another name (``arlo not bree``) with
    ``content_not_p``; with ``scene_p`` the tilt and background phrases follow the name, each
    dropped with ``drop_p``.
    """
    validate(style, attributes)
    cast = names(count)
    name = cast[person]
    if count > 1 and rng.random() < content_not_p:
        others = [n for n in cast if n != name]
        name = f"{name} not {others[int(rng.integers(len(others)))]}"
    phrases = [name]
    if rng.random() < scene_p:
        phrases += [_phrase(n, attributes[n]) for n in SCENE_ATTRIBUTES
                    if n in attributes and rng.random() >= drop_p]
    style_phrase = None if style is None or rng.random() < drop_p else style
    if style_phrase is not None and rng.random() < style_not_p:
        others = [s for s in PRETRAIN_STYLES if s != style]
        style_phrase = f"{style} not {others[int(rng.integers(len(others)))]}"
    return _assemble(style_phrase, " ".join(phrases))
