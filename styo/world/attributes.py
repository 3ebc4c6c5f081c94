"""Content attributes and rendering styles of the miniature portrait world.

Every attribute value is a single lowercase word because values double as caption words
(and so as tokenizer vocabulary). The order of ``ATTRIBUTES`` is the order of phrases in
captions and of heads in the judge classifiers, so it is part of the interface.
"""

from __future__ import annotations

import numpy as np

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "face_shape": ("oval", "round", "long", "square"),
    "skin_tone": ("pale", "tan", "brown", "dark"),
    "hair_colour": ("black", "blonde", "red", "grey", "blue"),
    "hair_cut": ("short", "long", "curly", "bun"),
    "eyes": ("round", "narrow", "closed"),
    "mouth": ("smiling", "neutral", "open"),
    "glasses": ("glasses", "none"),
    "head_tilt": ("left", "upright", "right"),
    "background": ("blue", "green", "pink", "yellow", "grey"),
}

STYLES: tuple[str, ...] = ("photo", "sketch", "cartoon", "pixel", "watercolour", "mosaic", "halftone")
# Held out of pretraining so that one-shot learning of an unseen style can be tested.
HELD_OUT_STYLES: tuple[str, ...] = ("mosaic", "halftone")
PRETRAIN_STYLES: tuple[str, ...] = tuple(s for s in STYLES if s not in HELD_OUT_STYLES)


def sample_attributes(rng: np.random.Generator) -> dict[str, str]:
    """Draw every attribute uniformly and independently (one ``integers`` call each, in order)."""
    return {name: values[int(rng.integers(len(values)))] for name, values in ATTRIBUTES.items()}


def validate(style: str | None, attributes: dict[str, str]) -> None:
    """Raise ``ValueError`` naming the valid choices for an unknown style, attribute or value.

    ``attributes`` may be partial (e.g. overrides); use :func:`require_complete` to demand all.
    """
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid styles: {', '.join(STYLES)}")
    for name, value in attributes.items():
        if name not in ATTRIBUTES:
            raise ValueError(
                f"unknown attribute {name!r}; valid attributes: {', '.join(ATTRIBUTES)}"
            )
        if value not in ATTRIBUTES[name]:
            raise ValueError(
                f"unknown value {value!r} for attribute {name!r}; "
                f"valid values: {', '.join(ATTRIBUTES[name])}"
            )


def require_complete(attributes: dict[str, str]) -> None:
    """Raise ``ValueError`` if any attribute is missing (rendering needs all of them)."""
    missing = [name for name in ATTRIBUTES if name not in attributes]
    if missing:
        raise ValueError(f"missing attributes: {', '.join(missing)}")
