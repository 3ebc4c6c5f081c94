"""The rendered-page checker itself: it must call a blank, missing or broken figure what it is."""

from __future__ import annotations

import numpy as np
from PIL import Image

import browser


def test_blank_missing_and_broken_images_are_not_figures(tmp_path):
    page = tmp_path / "page.html"
    (tmp_path / "_images").mkdir()
    Image.new("RGB", (8, 8), (40, 90, 200)).save(tmp_path / "_images" / "flat.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "_images" / "ok.png")
    (tmp_path / "_images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert browser._blank("_images/flat.png", page)
    assert not browser._blank("_images/ok.png", page)
    assert browser._blank("_images/broken.png", page)
    assert browser._blank("_images/missing.png", page)


def test_page_parser_finds_content_images_and_widget_views():
    parser = browser._Collect()
    parser.feed(
        '<html><img src="../_static/logo.svg"><img src="../_images/a.png">'
        f'<script type="{browser.WIDGET_VIEW}">{{"model_id": "x"}}</script></html>'
    )
    assert parser.images == ["../_static/logo.svg", "../_images/a.png"] and parser.widget_views == 1
