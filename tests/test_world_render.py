"""Tests of the miniature world: attributes, deterministic rendering, captions."""

from __future__ import annotations

import re

import numpy as np
import pytest

from styo.world.attributes import (
    ATTRIBUTES,
    HELD_OUT_STYLES,
    PRETRAIN_STYLES,
    STYLES,
    sample_attributes,
    validate,
)
from styo.world.captions import caption, plain_caption, vocabulary
from styo.world.render import SIZE, render, render_batch, render_seed

IDENTIFIERS = ("ak47", "aug", "sks", "m4a1")
BASE = {
    "face_shape": "oval",
    "skin_tone": "tan",
    "hair_colour": "red",
    "hair_cut": "short",
    "eyes": "round",
    "mouth": "smiling",
    "glasses": "none",
    "head_tilt": "upright",
    "background": "blue",
}


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def test_interface_constants() -> None:
    assert list(ATTRIBUTES) == list(BASE)
    assert PRETRAIN_STYLES == tuple(s for s in STYLES if s not in HELD_OUT_STYLES)
    assert set(HELD_OUT_STYLES) <= set(STYLES)


def test_sample_attributes_is_uniform_and_valid() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_attributes(rng) for _ in range(3000)]
    for name, values in ATTRIBUTES.items():
        counts = np.array([sum(d[name] == v for d in draws) for v in values])
        assert counts.min() > 0.7 * len(draws) / len(values)
    validate(None, draws[0])


@pytest.mark.parametrize(
    ("style", "attrs", "pattern"),
    [
        ("oil", {}, r"unknown style 'oil'; valid styles: photo, .*halftone"),
        ("photo", {"hat": "red"}, r"unknown attribute 'hat'; valid attributes: face_shape, "),
        ("photo", {"eyes": "big"}, r"unknown value 'big' .*'eyes'.*round, narrow, closed"),
    ],
)
def test_validate_messages(style: str, attrs: dict[str, str], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        validate(style, attrs)
    assert "\n" not in str(info.value)


def test_render_requires_all_attributes() -> None:
    with pytest.raises(ValueError, match="missing attributes: glasses"):
        render({k: v for k, v in BASE.items() if k != "glasses"}, "photo")


def test_determinism_and_seed_nuisance() -> None:
    for style in STYLES:
        a = render(BASE, style, seed=5).tobytes()
        assert a == render(BASE, style, seed=5).tobytes()
        assert a != render(BASE, style, seed=6).tobytes()
    image, style, attrs = render_seed(11)
    image2, style2, attrs2 = render_seed(11)
    assert image.tobytes() == image2.tobytes() and (style, attrs) == (style2, attrs2)
    # The seed changes the pose a little, never what was asked for.
    _, _, other = render_seed(12, style="photo", overrides=attrs)
    assert other == attrs


@pytest.mark.parametrize("style", STYLES)
def test_every_style_renders_rgb(style: str) -> None:
    rng = np.random.default_rng(1)
    for seed in range(4):
        image = render(sample_attributes(rng), style, seed=seed)
        array = np.asarray(image)
        assert image.mode == "RGB" and array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
        assert array.std() > 10  # a picture, not a flat field


def test_render_seed_overrides_and_styles() -> None:
    image, style, attrs = render_seed(3, overrides={"glasses": "glasses"}, styles=("pixel",))
    assert style == "pixel" and attrs["glasses"] == "glasses"
    with pytest.raises(ValueError, match="unknown value"):
        render_seed(3, overrides={"glasses": "monocle"})


def test_render_batch_uses_pretrain_styles_only() -> None:
    images, styles, attrs = render_batch(range(200))
    assert images.shape == (200, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert set(styles) <= set(PRETRAIN_STYLES) and len(set(styles)) == len(PRETRAIN_STYLES)
    assert len(attrs) == 200 and all(set(a) == set(ATTRIBUTES) for a in attrs)


@pytest.mark.parametrize("style", STYLES)
def test_each_attribute_changes_the_image(style: str) -> None:
    """Changing one attribute (only) changes the picture visibly, in every style."""
    for name, values in ATTRIBUTES.items():
        images = [_pixels(render({**BASE, name: v}, style, seed=2)) for v in values]
        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                diff = np.abs(images[i] - images[j]).mean()
                assert diff > 0.3, (style, name, values[i], values[j], diff)


def test_captions_words_and_template() -> None:
    vocab = set(vocabulary())
    assert vocabulary() == sorted(vocab)
    assert not vocab & set(IDENTIFIERS)
    assert {"portrait", "not", "no", "mosaic", "halftone"} <= vocab
    rng = np.random.default_rng(0)
    for k in range(2000):
        attrs = sample_attributes(rng)
        style = PRETRAIN_STYLES[k % len(PRETRAIN_STYLES)] if k % 10 else None
        text = caption(style, attrs, rng)
        assert "  " not in text and text == text.strip()
        assert set(text.split()) <= vocab
        assert text.endswith("portrait")
        assert not any(re.search(rf"\b{w}\b", text) for w in IDENTIFIERS)
        assert not any(h in text.split() for h in HELD_OUT_STYLES)
        prefix = f"a drawing with {style}" if style else "a drawing of"
        assert text.startswith(prefix)


def test_caption_all_dropped() -> None:
    rng = np.random.default_rng(0)
    assert caption("photo", BASE, rng, drop_p=1.0, style_not_p=0.0) == (
        "a drawing with photo style of portrait"
    )
    assert caption(None, BASE, rng, drop_p=1.0) == "a drawing of portrait"


def test_caption_probabilities() -> None:
    rng = np.random.default_rng(1)
    n, phrases, kept, style_not, content_not = 4000, len(ATTRIBUTES), 0, 0, 0
    for _ in range(n):
        text = caption("sketch", BASE, rng)
        head, content = text.split(" style of ")
        style_not += " not " in head
        content_not += " not " in content
        kept += sum(p in content for p in ("oval face", "tan skin", "red hair", "short haircut",
                                            "round eyes", "smiling mouth", "no glasses",
                                            "upright tilt", "blue background"))
    assert abs(kept / (n * phrases) - 0.8) < 0.03
    assert abs(style_not / n - 0.3) < 0.03
    # A contrast needs a kept non-glasses phrase, which is almost always there.
    assert abs(content_not / n - 0.2) < 0.03


def test_contrast_is_same_attribute() -> None:
    rng = np.random.default_rng(2)
    for _ in range(500):
        text = caption(None, BASE, rng, drop_p=0.0, content_not_p=1.0)
        match = re.search(r"(\w+) (\w+) not (\w+) (\w+)", text)
        assert match and match.group(2) == match.group(4) and match.group(1) != match.group(3)
        assert "glasses not" not in text


def test_plain_caption() -> None:
    text = plain_caption("cartoon", BASE)
    assert text == (
        "a drawing with cartoon style of oval face tan skin red hair short haircut round eyes "
        "smiling mouth no glasses upright tilt blue background portrait"
    )
    assert plain_caption(None, {**BASE, "glasses": "glasses"}).startswith("a drawing of oval")
    assert " glasses upright" in plain_caption(None, {**BASE, "glasses": "glasses"})
