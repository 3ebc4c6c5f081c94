"""attention_sharpness on the tiny pipeline: exact layers, known uniform maps, restored processors."""

from __future__ import annotations

import copy

import pytest
import torch

from styo.attention import attention_processors
from styo.prompts import source_prompt
from styo.sharpness import _Measure, _Statistics, attention_sharpness
from styo.testing import tiny_pipeline

PROMPT = source_prompt()


@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline(seed=2)
    p.set_progress_bar_config(disable=True)
    return p


def cross_layers(unet):
    return [m for m in unet.modules() if getattr(m, "is_cross_attention", False)]


def test_the_measuring_processor_leaves_each_layer_exact_and_measures_each_one(pipe):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=g)
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    embeds = pipe.text_encoder(ids)[0]
    with torch.no_grad():
        expected = pipe.unet(latents, 500, encoder_hidden_states=embeds).sample
        stats = _Statistics(torch.tensor([len(pipe.tokenizer(PROMPT).input_ids)]))
        with attention_processors(pipe.unet, lambda _, base: _Measure(stats, base)):
            got = pipe.unet(latents, 500, encoder_hidden_states=embeds).sample
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert stats.count == len(cross_layers(pipe.unet))


def test_keys_that_ignore_the_text_give_uniform_maps_with_known_figures(pipe):
    flat = copy.deepcopy(pipe)
    for layer in cross_layers(flat.unet):  # every key zero: every score equal, softmax uniform
        torch.nn.init.zeros_(layer.to_k.weight)
    stats = attention_sharpness(flat, [PROMPT, "a portrait"], num_inference_steps=2)
    n_prompt = (len(flat.tokenizer(PROMPT).input_ids) + len(flat.tokenizer("a portrait").input_ids)) / 2
    assert stats["entropy"] == pytest.approx(1.0, abs=1e-6)
    assert stats["max_prob"] == pytest.approx(1 / 77, rel=1e-5)
    assert stats["prompt_mass"] == pytest.approx(n_prompt / 77, rel=1e-5)
    assert stats["prompt_mass"] + stats["padding_mass"] == pytest.approx(1.0)


def test_sharper_queries_lower_the_entropy_and_the_processors_come_back(pipe):
    before = dict(pipe.unet.attn_processors)
    base = attention_sharpness(pipe, [PROMPT], num_inference_steps=2)
    assert dict(pipe.unet.attn_processors) == before  # the very same processor objects
    sharp = copy.deepcopy(pipe)
    for layer in cross_layers(sharp.unet):
        layer.to_q.weight.data *= 20.0  # larger scores: a peakier softmax
    peaked = attention_sharpness(sharp, [PROMPT], num_inference_steps=2)
    assert peaked["entropy"] < base["entropy"] - 0.05
    assert peaked["max_prob"] > base["max_prob"]


def test_no_prompts_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="at least one prompt"):
        attention_sharpness(pipe, [])
