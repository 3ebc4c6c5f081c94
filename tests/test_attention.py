"""FCC attention processors on the tiny pipeline: exactness, control, recording, restoration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from styo.attention import (
    AttentionController,
    AttentionRecorder,
    ControlProcessor,
    SharedSelfAttnProcessor,
    attention_control,
    branch_rows,
)
from styo.fcc import encode_prompts
from styo.prompts import Identifiers, content_index_map, source_prompt, stylization_prompt
from styo.testing import tiny_pipeline

REC, STY = source_prompt(), stylization_prompt(n_s=3, n_c=2)
ALL_TOKENS = [(i, i) for i in range(77)]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=1)


def unet_inputs(pipe, rec=REC, sty=STY, pairs=1, guidance=True, same_latents=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = (4 if guidance else 2) * pairs
    latents = torch.randn(rows, 4, 8, 8, generator=g)
    if same_latents:
        base = torch.randn(pairs, 4, 8, 8, generator=g)
        latents = base.repeat(rows // pairs, 1, 1, 1)
    embeds = encode_prompts(pipe, [rec, sty], pairs, guidance)
    return latents, embeds


def run_unet(pipe, latents, embeds, t=500):
    with torch.no_grad():
        return pipe.unet(latents, t, encoder_hidden_states=embeds).sample


def test_branch_rows_layout():
    assert branch_rows(8, guidance=True) == {"rec": slice(4, 6), "sty": slice(6, 8)}
    assert branch_rows(2, guidance=False) == {"rec": slice(0, 1), "sty": slice(1, 2)}
    with pytest.raises(ValueError, match="layout"):
        branch_rows(6, guidance=True)


def test_empty_content_map_equals_default_processors(pipe):
    latents, embeds = unet_inputs(pipe)
    ref = run_unet(pipe, latents, embeds)
    with attention_control(pipe.unet, AttentionController([])):
        out = run_unet(pipe, latents, embeds)
    assert torch.equal(out, ref)


def test_explicit_path_matches_sdpa(pipe):
    # Recording forces the explicit softmax on the cond rows; with no control it must agree.
    latents, embeds = unet_inputs(pipe)
    ref = run_unet(pipe, latents, embeds)
    recorder = AttentionRecorder()
    with attention_control(pipe.unet, AttentionController([], recorder=recorder)):
        out = run_unet(pipe, latents, embeds)
    assert recorder.maps
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_control_changes_only_the_conditional_stylization_rows(pipe):
    latents, embeds = unet_inputs(pipe, pairs=2)
    ref = run_unet(pipe, latents, embeds)
    pairs = content_index_map(pipe.tokenizer, Identifiers(), 3, 2)
    with attention_control(pipe.unet, AttentionController(pairs)):
        out = run_unet(pipe, latents, embeds)
    torch.testing.assert_close(out[:6], ref[:6], atol=1e-5, rtol=1e-5)
    assert (out[6:] - ref[6:]).abs().amax() > 1e-3


def test_identical_prompts_full_control_reproduces_reconstruction(pipe):
    latents, embeds = unet_inputs(pipe, rec=REC, sty=REC, same_latents=True)
    with attention_control(pipe.unet, AttentionController(ALL_TOKENS)):
        out = run_unet(pipe, latents, embeds)
    torch.testing.assert_close(out[3], out[2], atol=1e-5, rtol=1e-5)


def test_full_control_copies_maps_at_layer_level(pipe):
    # Different image features per row, identical prompts: with every token controlled the
    # stylization row's attention output is the reconstruction row's, whatever its own queries.
    attn = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 64, attn.query_dim, generator=g)
    _, embeds = unet_inputs(pipe, rec=REC, sty=REC)
    base = AttnProcessor2_0()
    proc = ControlProcessor(AttentionController(ALL_TOKENS), "layer", base)
    with torch.no_grad():
        out = proc(attn, hidden, embeds)
        ref = base(attn, hidden, embeds)
    torch.testing.assert_close(out[3], out[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:3], ref[:3], atol=1e-5, rtol=1e-5)
    assert (out[3] - ref[3]).abs().amax() > 1e-4


def test_partial_control_follows_the_formula(pipe):
    attn = pipe.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(4, 64, attn.query_dim, generator=g)
    _, embeds = unet_inputs(pipe)
    pairs = content_index_map(pipe.tokenizer, Identifiers(), 3, 2)
    proc = ControlProcessor(AttentionController(pairs), "layer", AttnProcessor2_0())
    with torch.no_grad():
        out = proc(attn, hidden, embeds)
        q, k, v = (
            attn.head_to_batch_dim(f(x))
            for f, x in ((attn.to_q, hidden), (attn.to_k, embeds), (attn.to_v, embeds))
        )
        probs = attn.get_attention_scores(q, k).view(4, attn.heads, 64, 77)
        sty_idx, rec_idx = zip(*pairs, strict=True)
        probs[3][..., list(sty_idx)] = probs[2][..., list(rec_idx)]
        mixed = attn.batch_to_head_dim(torch.bmm(probs.view(4 * attn.heads, 64, 77), v))
        expected = attn.to_out[0](mixed)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_control_only_on_chosen_steps(pipe):
    latents, embeds = unet_inputs(pipe)
    ref = run_unet(pipe, latents, embeds)
    controller = AttentionController(ALL_TOKENS, control_steps={2, 3})
    with attention_control(pipe.unet, controller):
        controller.step = 1
        off = run_unet(pipe, latents, embeds)
        controller.step = 2
        on = run_unet(pipe, latents, embeds)
    assert torch.equal(off, ref)
    assert (on[3] - ref[3]).abs().amax() > 1e-3


def test_without_guidance_layout(pipe):
    latents, embeds = unet_inputs(pipe, rec=REC, sty=REC, guidance=False, same_latents=True)
    with attention_control(pipe.unet, AttentionController(ALL_TOKENS, guidance=False)):
        out = run_unet(pipe, latents, embeds)
    torch.testing.assert_close(out[1], out[0], atol=1e-5, rtol=1e-5)


def test_processors_restored_after_exception(pipe):
    before = pipe.unet.attn_processors
    with pytest.raises(RuntimeError, match="boom"):
        with attention_control(pipe.unet, AttentionController(ALL_TOKENS)):
            inside = pipe.unet.attn_processors
            for key, proc in inside.items():
                if ".attn2." in key:
                    assert isinstance(proc, ControlProcessor) and proc.base is before[key]
                else:
                    assert proc is before[key]  # self-attention untouched (fused SDPA)
            raise RuntimeError("boom")
    after = pipe.unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)


def test_self_attention_sharing_extension(pipe):
    latents, embeds = unet_inputs(pipe)
    ref = run_unet(pipe, latents, embeds)
    before = pipe.unet.attn_processors
    controller = AttentionController([], share_self_attention=True)
    with attention_control(pipe.unet, controller):
        procs = pipe.unet.attn_processors
        assert all(isinstance(procs[k], SharedSelfAttnProcessor) for k in procs if ".attn1." in k)
        out = run_unet(pipe, latents, embeds)
    assert all(pipe.unet.attn_processors[k] is before[k] for k in before)
    torch.testing.assert_close(out[:3], ref[:3], atol=1e-5, rtol=1e-5)
    assert (out[3] - ref[3]).abs().amax() > 1e-3


def test_recording_shapes_and_normalisation(pipe):
    latents, embeds = unet_inputs(pipe, pairs=2)
    recorder = AttentionRecorder()
    controller = AttentionController([], recorder=recorder)
    with attention_control(pipe.unet, controller):
        for step in range(2):
            controller.step = step
            run_unet(pipe, latents, embeds)
    assert len(recorder.maps) == 7  # every cross-attention layer of the tiny UNet
    assert sorted(set(recorder.sizes.values())) == [(4, 4), (8, 8)]
    assert recorder.recorded_steps == [0, 1]
    for name, per_step in recorder.maps.items():
        h, w = recorder.sizes[name]
        for maps in per_step.values():
            assert maps.shape == (2, 2, h, w, 77)
            torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, h, w))


def test_recording_memory_bound_and_step_filter(pipe):
    latents, embeds = unet_inputs(pipe)
    recorder = AttentionRecorder(max_resolution=4, branches=("sty",), steps={1})
    controller = AttentionController([], recorder=recorder)
    with attention_control(pipe.unet, controller):
        for step in range(3):
            controller.step = step
            run_unet(pipe, latents, embeds)
    assert set(recorder.sizes.values()) == {(4, 4)}
    assert len(recorder.layers()) == 4 and recorder.recorded_steps == [1]
    assert next(iter(recorder.maps.values()))[1].shape == (1, 1, 4, 4, 77)


def test_aggregate_words_to_heat_maps(pipe):
    latents, embeds = unet_inputs(pipe)
    recorder = AttentionRecorder()
    recorder.tokenizer, recorder.prompts = pipe.tokenizer, {"rec": REC, "sty": STY}
    with attention_control(pipe.unet, AttentionController([], recorder=recorder)):
        run_unet(pipe, latents, embeds)
    heat = recorder.aggregate(["m4a1", "portrait"], image_size=(16, 16))
    assert set(heat) == {"m4a1", "portrait"}
    for m in heat.values():
        assert m.shape == (16, 16) and m.dtype == np.float32
        assert m.min() >= 0 and np.isclose(m.max(), 1.0)
    only8 = recorder.aggregate({"x": [1, 2]}, 8, branch="rec", image_size=(16, 16))
    assert only8["x"].shape == (16, 16)
    assert recorder.word_indices(["m4a1"])["m4a1"] == [23, 24, 25, 26, 29, 30, 31, 32]
    with pytest.raises(KeyError, match="face"):
        recorder.aggregate(["face"], image_size=(16, 16))
    with pytest.raises(ValueError, match="no recorded maps"):
        recorder.aggregate(["sks"], 32, image_size=(16, 16))


def test_spatial_size_non_square():
    controller = AttentionController(latent_size=(8, 12))
    assert controller.spatial_size(96) == (8, 12)
    assert controller.spatial_size(24) == (4, 6)
    assert AttentionController().spatial_size(16) == (4, 4)
    with pytest.raises(ValueError, match="latent_size"):
        AttentionController().spatial_size(24)


def test_one_processor_family_computes_layers_as_diffusers_does(pipe):
    # Recording, FCC, the sharpness measure and the grounding loss all see the maps through
    # MapsProcessor; with the maps left as they are it is diffusers' own attention, row for row.
    from styo.attention import MapsProcessor
    from styo.sharpness import _Measure
    from styo.world.grounding import GroundingProcessor

    assert all(issubclass(c, MapsProcessor) for c in (ControlProcessor, _Measure, GroundingProcessor))
    attn = pipe.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2
    hidden = torch.randn(4, 64, attn.query_dim, generator=torch.Generator().manual_seed(5))
    _, embeds = unet_inputs(pipe)
    seen = []

    class Look(MapsProcessor):
        def maps(self, probs):
            seen.append(probs.shape)
            return probs

    with torch.no_grad():
        out = Look(AttnProcessor2_0())(attn, hidden, embeds)
        ref = AttnProcessor2_0()(attn, hidden, embeds)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert seen == [(4, attn.heads, 64, 77)]


def test_maps_processor_refuses_layers_it_does_not_compute(pipe):
    # The VAE's attention is self-attention with group norm and a residual: not a layout the
    # explicit path reproduces, so it must say so instead of computing something else.
    from styo.attention import MapsProcessor

    attn = next(m for m in pipe.vae.modules() if hasattr(m, "set_processor"))
    x = torch.randn(1, attn.query_dim, 4, 4)
    with pytest.raises(ValueError, match="transformer blocks"):
        MapsProcessor(AttnProcessor2_0())(attn, x, torch.randn(1, 77, attn.query_dim))
