"""Attention explorers on maps recorded from the tiny pipeline: overlay, figure, static, live."""

from __future__ import annotations

import json

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import pytest
from ipywidgets.embed import dependency_state, embed_minimal_html
from ipywidgets.widgets.widget_link import Link

from styo.book.explorer import (
    live_explorer,
    overlay,
    static_explorer,
    step_buckets,
    word_maps_figure,
)
from styo.fcc import stylize
from styo.testing import tiny_pipeline

WORDS = ["ak47", "aug", "sks", "m4a1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))
    return stylize(tiny_pipeline(), image, num_inference_steps=4, record=True,
                   guidance_scale=2.0, seed=0)


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def test_overlay_shapes_modes_and_alpha():
    rng = np.random.default_rng(1)
    image = PIL.Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8))
    heat = rng.random((4, 6))
    out = overlay(image, heat, 0.6)
    assert out.mode == "RGB" and out.size == image.size
    assert np.array_equal(np.asarray(overlay(image, heat, 0.0)), np.asarray(image))
    assert np.array_equal(np.asarray(overlay(image.convert("RGBA"), heat, 0.0)),
                          np.asarray(image))
    assert not np.array_equal(np.asarray(out), np.asarray(image))
    inferno = overlay(image, heat, 0.6, cmap="inferno")
    assert not np.array_equal(np.asarray(inferno), np.asarray(out))
    grey = np.asarray(overlay(image, heat, 0.0, grey=True))
    assert np.array_equal(grey[..., 0], grey[..., 1])
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, 1.5)


def test_step_buckets():
    assert step_buckets(range(10), 4) == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert step_buckets([0, 1, 2], 8) == [[0], [1], [2]]
    assert step_buckets(range(6), 3, cumulative=True) == [[0, 1], [0, 1, 2, 3], list(range(6))]


def test_word_maps_figure_one_panel_per_word(result):
    fig = word_maps_figure(result.maps, result.images[0], WORDS)
    try:
        titled = [ax.get_title() for ax in fig.axes if ax.images]
        assert titled == ["image", *WORDS]
        fig2 = word_maps_figure(result.maps, result.images[0], WORDS[:2], resolution=4, steps=[0])
        assert [ax.get_title() for ax in fig2.axes if ax.images] == ["image", *WORDS[:2]]
        plt.close(fig2)
    finally:
        plt.close(fig)


def test_static_explorer_tree_links_and_pngs(result):
    rec = result.maps
    box = static_explorer(rec, result.images[0], WORDS, alphas=(0.3, 0.9), max_step_buckets=8)
    n_res = 1 + len({max(s) for s in rec.sizes.values()})  # all layers + each resolution
    n_steps = len(rec.recorded_steps)
    n_images = len(WORDS) * n_res * 2 * n_steps
    assert len(box.images) == n_images
    tree_images = [w for w in walk(box) if isinstance(w, W.Image)]
    assert len(tree_images) == n_images + 1  # + the plain image
    stacks = [w for w in walk(box) if isinstance(w, W.Stack)]
    assert len(stacks) == 1 + len(WORDS) * (1 + n_res * (1 + 2))

    # Every Stack is driven by exactly one control through a browser-side link.
    assert all(isinstance(link, Link) for link in box.links)
    targets = {}
    for link in box.links:
        (src, src_trait), (dst, dst_trait) = link.source, link.target
        assert src_trait == "index" and dst_trait == "selected_index"
        assert src in box.controls.values() and isinstance(dst, W.Stack)
        targets[dst.model_id] = src
    assert set(targets) == {s.model_id for s in stacks}
    assert len(box.links) == 1 + len(WORDS) + len(WORDS) * n_res + len(WORDS) * n_res * 2
    # ... and the number of pages at each level matches the control's options.
    for stack in stacks:
        assert len(stack.children) == len(targets[stack.model_id].options)

    values = [bytes(img.value) for img in box.images.values()]
    assert all(v.startswith(PNG_MAGIC) for v in values)
    key = (None, 0.9, n_steps - 1)
    assert len({bytes(box.images[(w, *key)].value) for w in WORDS}) == len(WORDS)
    assert sum(map(len, values)) < 2_000 * n_images  # 16×16 PNGs stay tiny

    with pytest.raises(ValueError, match="max_images"):
        static_explorer(rec, result.images[0], WORDS, max_images=10)


def test_static_explorer_state_embeds(result, tmp_path):
    box = static_explorer(result.maps, result.images[0], WORDS[:2], alphas=(0.6,))
    state = dependency_state(box)
    json.dumps(state)  # serialisable as the notebook's widget metadata is
    models = {s["model_name"] for s in state.values()}
    assert {"StackModel", "LinkModel", "ImageModel", "SelectionSliderModel"} <= models
    path = tmp_path / "x.html"
    embed_minimal_html(path, views=[box], state=state)
    html = path.read_text()
    assert "application/vnd.jupyter.widget-state+json" in html
    assert "application/vnd.jupyter.widget-view+json" in html
    assert box.model_id in html and "LinkModel" in html


def test_live_explorer_redraws_on_trait_changes(result):
    images = {"rec": result.reconstruction, "sty": result.images[0]}
    box = live_explorer(result.maps, images, WORDS)
    c = box.controls
    seen = [bytes(box.view.value)]
    assert seen[0].startswith(PNG_MAGIC)

    def changed():
        assert bytes(box.view.value) != seen[-1]
        seen.append(bytes(box.view.value))

    c["word"].value = "sks"
    changed()
    c["alpha"].value = 0.2
    changed()
    c["steps"].value = (1, 1)
    changed()
    layer = next(v for label, v in c["layers"].options if v[1] is not None)
    c["layers"].value = layer
    changed()
    c["branch"].value = "rec"
    changed()
    assert "rec branch" in box.message.value and "sks" in box.message.value
