"""The target-side auxiliary set's painter: the style's texture on the content's layout and colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from styo.texture_transfer import painted_portraits, texture_transfer

SIZE = 32


def _stripes() -> Image.Image:
    """Grey vertical stripes two pixels wide: a texture with one frequency and no layout."""
    x = np.arange(SIZE)
    row = np.where((x // 2) % 2 == 0, 60, 200).astype(np.uint8)
    return Image.fromarray(np.repeat(np.tile(row, (SIZE, 1))[..., None], 3, axis=2))


def _red_over_blue() -> Image.Image:
    """A smooth picture, red above and blue below: a layout and colours with no texture."""
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[: SIZE // 2] = (200, 40, 40)
    pixels[SIZE // 2:] = (40, 40, 200)
    return Image.fromarray(pixels)


def test_the_content_keeps_its_colours_and_takes_the_style_texture():
    style, content = _stripes(), _red_over_blue()
    before = (np.asarray(style).copy(), np.asarray(content).copy())
    painted = np.asarray(texture_transfer(style, content, seed=0)).astype(float)
    assert painted.shape == (SIZE, SIZE, 3)
    top, bottom = painted[: SIZE // 2 - 3], painted[SIZE // 2 + 3:]
    assert top[..., 0].mean() > top[..., 2].mean() + 60  # red stays above
    assert bottom[..., 2].mean() > bottom[..., 0].mean() + 60  # blue stays below
    # the stripes' texture: neighbouring columns differ far more than in the smooth content
    brightness = painted.mean(axis=2)
    assert np.abs(np.diff(brightness, axis=1)).mean() > 15
    assert np.abs(np.diff(np.asarray(content).astype(float).mean(axis=2), axis=1)).mean() == 0
    assert np.array_equal(np.asarray(style), before[0]) and np.array_equal(np.asarray(content), before[1])


def test_the_same_seed_paints_the_same_picture():
    rng = np.random.default_rng(3)
    style = Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    content = _red_over_blue()
    first, again = texture_transfer(style, content, seed=5), texture_transfer(style, content, seed=5)
    assert np.array_equal(np.asarray(first), np.asarray(again))


def test_bad_pictures_and_counts_are_refused():
    with pytest.raises(ValueError, match="two square pictures of one size"):
        texture_transfer(_stripes(), _red_over_blue().resize((16, 16)))
    with pytest.raises(ValueError, match="too small"):
        texture_transfer(_stripes().resize((8, 8)), _red_over_blue().resize((8, 8)))
    with pytest.raises(ValueError, match="between 1 and 2"):
        painted_portraits(_stripes(), [_red_over_blue()] * 2, 3)
    painted = painted_portraits(_stripes(), [_red_over_blue(), _red_over_blue().rotate(180)], 2)
    assert len(painted) == 2 and not np.array_equal(np.asarray(painted[0]), np.asarray(painted[1]))


def test_painting_a_set_shows_its_progress_only_when_asked(capsys):
    aux = [_red_over_blue(), _red_over_blue().rotate(180)]
    quiet = painted_portraits(_stripes(), aux, 2)
    assert "painting" not in capsys.readouterr().err
    shown = painted_portraits(_stripes(), aux, 2, progress=True)
    assert "painting" in (err := capsys.readouterr().err) and "2/2" in err
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(quiet, shown, strict=True))
