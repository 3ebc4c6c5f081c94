"""The chapters' small measurements: cross-attention layers, layer labels, map grids, concentration."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import pytest
import torch

from styo.attention import AttentionRecorder
from styo.book.showcase import concentration, cross_attention_layers, layer_label, map_grid
from styo.fcc import stylize
from styo.testing import tiny_pipeline


@pytest.fixture(scope="module")
def recorded():
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))
    out = stylize(tiny_pipeline(), image, num_inference_steps=4, record=True, guidance_scale=2.0,
                  seed=0)
    return out.maps, out.images[0]


def test_cross_attention_layers_in_forward_order_with_their_resolution():
    pipe = tiny_pipeline()
    layers = cross_attention_layers(pipe)
    names = [n for n, _ in pipe.unet.named_modules() if n.endswith("attn2")]
    assert sorted(layer.name for layer in layers) == sorted(names)
    # forward order: down blocks, then the mid block, then the up blocks (not registration order)
    kinds = [layer.name.split(".")[0] for layer in layers]
    first_up = kinds.index("up_blocks")
    assert kinds[first_up - 1] == "mid_block" and kinds.count("mid_block") == 1
    assert set(kinds[: first_up - 1]) == {"down_blocks"} and set(kinds[first_up:]) == {"up_blocks"}
    # the tiny UNet works on 8×8 latents and halves once: 8² and 4² layers
    assert {layer.size for layer in layers} == {(8, 8), (4, 4)}
    assert layers[0].size == (8, 8) and layers[-1].size == (8, 8)
    assert all(layer.text_tokens == pipe.tokenizer.model_max_length for layer in layers)
    assert all(layer.parameters > 0 and layer.heads >= 1 for layer in layers)
    assert not any(m._forward_hooks for m in pipe.unet.modules())  # hooks removed


def test_layer_label():
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"
    assert layer_label(name) == "down1.0"
    assert layer_label(name, (8, 8)) == "down1.0 8×8"
    assert layer_label("mid_block.attentions.0.transformer_blocks.0.attn2", (4, 4)) == "mid 4×4"
    assert layer_label("up_blocks.2.attentions.1.transformer_blocks.0.attn2") == "up2.1"


def test_map_grid_has_a_panel_per_word_and_view(recorded):
    recorder, image = recorded
    views = {"all": {}, "4²": {"resolution": 4}, "step 1": {"steps": [0]}}
    fig = map_grid(recorder, image, ["aug", "sks"], views)
    axes = fig.get_axes()
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:3]] == list(views)
    assert axes[0].get_ylabel() == "aug" and axes[3].get_ylabel() == "sks"
    plt.close(fig)
    with pytest.raises(ValueError):
        map_grid(recorder, image, [], views)


def test_concentration_bounds_and_extremes():
    recorder = AttentionRecorder(branches=("sty",))
    recorder.tokenizer = tiny_pipeline().tokenizer
    recorder.prompts = {"sty": "a portrait"}
    even = torch.full((1, 1, 4, 4, 5), 1.0 / 5)
    peaked = torch.zeros(1, 1, 4, 4, 5)
    peaked[..., :, :, 0] = 1.0
    peaked[..., 0, 0, 2] = 1.0  # all of "portrait" (token 2) in one pixel
    peaked[..., 0, 0, 0] = 0.0
    recorder.store("down_blocks.0.attentions.0.transformer_blocks.0.attn2", 0, even.flatten(2, 3), (4, 4))
    recorder.store("down_blocks.0.attentions.0.transformer_blocks.0.attn2", 1, peaked.flatten(2, 3), (4, 4))
    steps, values = concentration(recorder, ["portrait"], top=0.25)
    assert steps == [0, 1]
    assert values["portrait"][0] == pytest.approx(0.25)  # even spread: the top quarter holds a quarter
    assert values["portrait"][1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="top"):
        concentration(recorder, ["portrait"], top=0)
    with pytest.raises(ValueError, match="resolution"):
        concentration(recorder, ["portrait"], resolution=16)


def test_concentration_on_recorded_maps(recorded):
    recorder, _ = recorded
    steps, values = concentration(recorder, ["sks", "aug"], resolution=8)
    assert steps == recorder.recorded_steps
    for series in values.values():
        assert len(series) == len(steps)
        assert all(0.1 - 1e-6 <= v <= 1.0 + 1e-6 for v in series)
