"""Captions of miniature-world portraits, in the words of the StyO prompt templates.

Pretraining captions follow ``a drawing with <style> style of <content> portrait``; phrases are
dropped at random so the model learns each attribute word on its own, and ``not`` contrasts are
mixed in so that the contrastive prompts StyO builds (``<S> not <C>``) are in distribution.
"""

from __future__ import annotations

import numpy as np

from .attributes import ATTRIBUTES, PRETRAIN_STYLES, STYLES, validate

# The noun that follows each attribute value in a content phrase ("blonde hair", "left tilt").
_NOUNS: dict[str, str] = {
    "face_shape": "face",
    "skin_tone": "skin",
    "hair_colour": "hair",
    "hair_cut": "haircut",
    "eyes": "eyes",
    "mouth": "mouth",
    "glasses": "",
    "head_tilt": "tilt",
    "background": "background",
}
_TEMPLATE_WORDS = ("a", "drawing", "with", "style", "of", "portrait", "not", "no")


def _phrase(name: str, value: str) -> str:
    """One attribute as words; glasses read "glasses" / "no glasses" rather than "none"."""
    if name == "glasses":
        return "glasses" if value == "glasses" else "no glasses"
    return f"{value} {_NOUNS[name]}"


def _assemble(style_phrase: str | None, content: str) -> str:
    """Fill the template, keeping single spaces when the content phrase is empty."""
    head = "a drawing" if style_phrase is None else f"a drawing with {style_phrase} style"
    return " ".join(w for w in (head, "of", content, "portrait") if w)


def _contrast(name: str, value: str, rng: np.random.Generator) -> str:
    """Append another value of the same attribute: "blonde hair not red hair"."""
    others = [v for v in ATTRIBUTES[name] if v != value]
    return f"{_phrase(name, value)} not {_phrase(name, others[int(rng.integers(len(others)))])}"


def caption(
    style: str | None,
    attributes: dict[str, str],
    rng: np.random.Generator,
    drop_p: float = 0.2,
    style_not_p: float = 0.3,
    content_not_p: float = 0.2,
) -> str:
    """A random training caption: phrases dropped with ``drop_p``, optional ``not`` contrasts."""
    validate(style, attributes)
    names = [n for n in ATTRIBUTES if n in attributes and rng.random() >= drop_p]
    phrases = {n: _phrase(n, attributes[n]) for n in names}
    contrastable = [n for n in names if n != "glasses"]
    if contrastable and rng.random() < content_not_p:
        chosen = contrastable[int(rng.integers(len(contrastable)))]
        phrases[chosen] = _contrast(chosen, attributes[chosen], rng)
    style_phrase = style
    if style is not None and rng.random() < style_not_p:
        others = [s for s in PRETRAIN_STYLES if s != style]
        style_phrase = f"{style} not {others[int(rng.integers(len(others)))]}"
    return _assemble(style_phrase, " ".join(phrases[n] for n in names))


def plain_caption(style: str | None, attributes: dict[str, str]) -> str:
    """The deterministic caption with every given attribute and no contrast (evaluation prompts)."""
    validate(style, attributes)
    content = " ".join(_phrase(n, attributes[n]) for n in ATTRIBUTES if n in attributes)
    return _assemble(style, content)


def vocabulary() -> list[str]:
    """Every word a caption can contain, sorted; held-out style names included, "none" not."""
    words = set(_TEMPLATE_WORDS) | set(STYLES) | {w for w in _NOUNS.values() if w}
    for name, values in ATTRIBUTES.items():
        words |= {v for v in values if not (name == "glasses" and v == "none")}
    return sorted(words)
