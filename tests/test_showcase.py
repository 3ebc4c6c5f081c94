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


def test_training_runs_lists_each_run_of_a_continued_model_and_their_total():
    from styo.book.showcase import training_runs

    scratch = {"config": {"unet_steps": 4000, "unet_batch": 128, "unet_lr": 3e-4, "warmup": 100,
                          "ema_decay": 0.999, "empty_caption_p": 0.1, "phrase_drop_p": 0.2,
                          "n_images": 40000, "vae_images": 20000},  # an early record: no layout
               "unet_sec_per_step_median": 5.4, "device": "cpu", "torch": "2"}
    continued = {"config": {**scratch["config"], "unet_steps": 900, "unet_batch": 64, "unet_lr": 1e-4,
                            "layout": "varied", "grounding_weight": 0.3, "threshold_weight": 1.0},
                 "unet_sec_per_step_median": 2.0, "device": "cpu", "torch": "2", "lineage": [scratch]}
    lines = training_runs(continued).splitlines()
    assert lines[0].startswith("from scratch") and "centred layout: 6.0 h" in lines[0]
    assert lines[3].startswith("then   900 steps") and "threshold 1" in lines[3] and lines[3].endswith("0.5 h")
    assert lines[-1].startswith("in all 4,900 UNet steps, about 6.5 h")
    assert len(training_runs(scratch).splitlines()) == 4  # a model trained in one run
    # a snapshot counts the steps it took, says how many were scheduled, and names its region weights
    stopped = {"snapshot_of_step": 1400, "config": {**continued["config"], "unet_steps": 3000,
                                                    "threshold_region_weights": {"eyes": 8.0},
                                                    "threshold_word_weights": {"closed": 2.0}},
               "unet_sec_per_step_median": 0.18, "torch": "2", "lineage": [scratch, continued]}
    lines = training_runs(stopped).splitlines()
    assert lines[4].startswith("then 1,400 steps (of 3,000 scheduled)") and ", eyes x8, 'closed' x2," in lines[4]
    assert lines[-1].startswith("in all 6,300 UNet steps") and "the machine of each run" in lines[-1]
    # a sharpened decoder (styo world sharpen-decoder) is one more line, and its time counts
    sharpened = {**stopped, "decoder_detail": {"config": {"steps": 800, "batch": 32, "lr": 1e-4, "images": 6000,
                                                          "part_weight": 30.0}, "wall_seconds": 1800}}
    lines = training_runs(sharpened).splitlines()
    assert lines[-2].startswith("then the decoder alone, 800 steps") and "x31: 0.5 h" in lines[-2]
    assert lines[-1].startswith("in all 6,300 UNet steps") and lines[-1] != training_runs(stopped).splitlines()[-1]


def test_grounding_summary_ranks_the_regions_and_names_the_lowest():
    from styo.book.showcase import grounding_summary

    grounded = {"n": 120, "miou": 0.6, "miou_per_target": {"hair": 0.7, "eyes": 0.3, "head": 0.9},
                "ceiling_per_target": {"hair": 0.8, "eyes": 0.35, "head": 0.95}}
    table, sentence = grounding_summary(grounded, {"entropy": 0.43, "padding_mass": 0.11})
    assert [line.split()[0] for line in table.splitlines()[1:]] == ["head", "hair", "eyes"]
    assert "**eyes**, 0.30, against 0.35" in sentence and "11%" in sentence
