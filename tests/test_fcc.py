"""The two-branch FCC sampler on the tiny pipeline: determinism, control effects, helpers."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from styo.attention import AttentionRecorder
from styo.fcc import (
    copied_content_encodings,
    decode_latents,
    denoising_timesteps,
    encode_image,
    step_range,
    stylize,
    to_tensor,
)
from styo.pipeline import image_size
from styo.prompts import Identifiers, PromptTooLongError
from styo.testing import tiny_pipeline

STEPS = 4


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=2)


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    return PIL.Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))


def run(pipe, source, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("seed", 0)
    return stylize(pipe, source, **kw)


def arrays(images):
    return np.stack([np.asarray(im) for im in images])


def test_helpers_round_trip(pipe, source):
    assert image_size(pipe) == 16
    x = to_tensor(pipe, source)
    assert x.shape == (1, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    z = encode_image(pipe, source)
    assert z.shape == (1, 4, 8, 8)
    assert torch.equal(z, encode_image(pipe, source))  # posterior mean: deterministic
    images = decode_latents(pipe, z)
    assert len(images) == 1 and images[0].size == (16, 16) and images[0].mode == "RGB"


def test_schedule_helpers(pipe):
    sched = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    assert len(denoising_timesteps(sched, 10, 0.8)) == 8
    assert len(denoising_timesteps(sched, 10, 1.0)) == 10
    with pytest.raises(ValueError, match="strength"):
        denoising_timesteps(sched, 10, 0.0)
    with pytest.raises(ValueError, match="runs no step"):
        denoising_timesteps(sched, 10, 0.05)
    assert step_range(8, (0.0, 1.0)) == set(range(8))
    assert step_range(8, (0.0, 0.5)) == {0, 1, 2, 3}
    assert step_range(8, (0.25, 0.5)) == {2, 3}
    with pytest.raises(ValueError, match="control_steps"):
        step_range(8, (0.6, 0.2))


def test_result_and_determinism(pipe, source):
    a = run(pipe, source)
    b = run(pipe, source, generator=torch.Generator().manual_seed(0))
    assert len(a.images) == 1 and a.images[0].size == (16, 16)
    assert a.prompts["sty"].count("aug not ak47") == 3
    assert a.content_map and a.maps is None and len(a.timesteps) == int(STEPS * 0.8)
    assert torch.equal(a.latents, b.latents)
    assert np.array_equal(arrays(a.images), arrays(b.images))
    assert np.array_equal(np.asarray(a.reconstruction), np.asarray(b.reconstruction))
    c = run(pipe, source, seed=1)
    assert not torch.equal(a.latents, c.latents)


def test_fcc_changes_only_the_stylization_branch(pipe, source):
    on, off = run(pipe, source), run(pipe, source, fcc=False)
    torch.testing.assert_close(on.latents[0], off.latents[0], atol=1e-4, rtol=1e-4)
    assert (on.latents[1] - off.latents[1]).abs().amax() > 1e-3
    assert not np.array_equal(arrays(on.images), arrays(off.images))


def test_empty_content_map_equals_no_control(pipe, source):
    off = run(pipe, source, fcc=False)
    empty = run(pipe, source, content_map=[])
    assert torch.equal(empty.latents, off.latents)
    # Installed processors on the explicit-softmax path (recording), still no control.
    recorded = run(pipe, source, content_map=[], record=True)
    torch.testing.assert_close(recorded.latents, off.latents, atol=1e-4, rtol=1e-4)


def test_control_step_range_matters(pipe, source):
    full = run(pipe, source, num_inference_steps=8)
    late = run(pipe, source, num_inference_steps=8, control_steps=(0.5, 1.0))
    none = run(pipe, source, num_inference_steps=8, control_steps=(0.0, 0.0))
    off = run(pipe, source, num_inference_steps=8, fcc=False)
    assert torch.equal(none.latents, off.latents)  # processors installed but passing through
    assert not torch.allclose(full.latents[1], late.latents[1], atol=1e-4)


def test_recording_through_stylize(pipe, source):
    recorder = AttentionRecorder(max_resolution=4)
    res = run(pipe, source, record=recorder, num_images=2)
    assert res.maps is recorder and recorder.prompts == res.prompts
    assert recorder.recorded_steps == list(range(len(res.timesteps)))
    assert set(recorder.sizes.values()) == {(4, 4)}
    heat = recorder.aggregate(["sks", "ak47"], image=1)
    assert all(m.shape == (16, 16) for m in heat.values())
    rec_heat = recorder.aggregate(["ak47"], branch="rec")
    assert rec_heat["ak47"].max() == pytest.approx(1.0)


def test_multiple_images_and_no_guidance(pipe, source):
    res = run(pipe, source, num_images=2)
    assert len(res.images) == 2 and len(res.reconstructions) == 2
    assert res.latents.shape == (4, 4, 8, 8)
    assert not torch.equal(res.latents[2], res.latents[3])  # own forward noise per image
    plain = run(pipe, source, guidance_scale=1.0)
    assert len(plain.images) == 1


def test_self_attention_sharing_option(pipe, source):
    base, shared = run(pipe, source), run(pipe, source, share_self_attention=True)
    assert (base.latents[1] - shared.latents[1]).abs().amax() > 1e-4


def test_copied_content_encodings_replace_only_the_stylizations_content_tokens():
    """[uncond × 2, rec × 2, sty × 2]: each mapped stylization token takes the reconstruction's
    encoding at its mapped index; every other row and token, and the input, stay as they were."""
    embeds = torch.randn(6, 9, 5)
    before = embeds.clone()
    pairs = [(6, 3), (7, 4), (8, 4)]
    out = copied_content_encodings(embeds, pairs, per_prompt=2, guidance=True)
    assert torch.equal(embeds, before)
    for image in range(2):
        for sty_index, rec_index in pairs:
            assert torch.equal(out[4 + image, sty_index], before[2 + image, rec_index])
    untouched = torch.ones(6, 9, dtype=torch.bool)
    untouched[4:, [6, 7, 8]] = False
    assert torch.equal(out[untouched], before[untouched])
    # without guidance there is no unconditional half: [rec, sty]
    plain = copied_content_encodings(before[2:4], [(1, 0)], per_prompt=1, guidance=False)
    assert torch.equal(plain[1, 1], before[2, 0]) and torch.equal(plain[0], before[2])


def test_content_encodings_copy_changes_only_the_stylization_and_only_with_fcc(pipe, source):
    fcc, copied = run(pipe, source), run(pipe, source, copy_content_encodings=True)
    assert (fcc.latents[1] - copied.latents[1]).abs().amax() > 1e-4
    torch.testing.assert_close(copied.latents[0], fcc.latents[0])  # the reconstruction is untouched
    off = run(pipe, source, fcc=False)
    assert torch.equal(run(pipe, source, fcc=False, copy_content_encodings=True).latents, off.latents)


def test_self_attention_sharing_has_its_own_step_window(pipe, source):
    """FCC on every step, self-attention shared on only the first steps (prompt-to-prompt's
    self-attention injection): an empty window is FCC alone, a window differs from both."""
    fcc = run(pipe, source, num_inference_steps=8)
    never = run(pipe, source, num_inference_steps=8, share_self_attention=True, self_attention_steps=(0.0, 0.0))
    early = run(pipe, source, num_inference_steps=8, share_self_attention=True, self_attention_steps=(0.0, 0.5))
    always = run(pipe, source, num_inference_steps=8, share_self_attention=True)
    assert torch.equal(never.latents, fcc.latents)
    assert (early.latents[1] - fcc.latents[1]).abs().amax() > 1e-4
    assert (early.latents[1] - always.latents[1]).abs().amax() > 1e-4
    torch.testing.assert_close(early.latents[0], fcc.latents[0])  # the reconstruction is untouched
    with pytest.raises(ValueError, match="self_attention_steps"):
        run(pipe, source, share_self_attention=True, self_attention_steps=(0.5, 0.2))


def test_prompt_overflow_raises(pipe, source):
    with pytest.raises(PromptTooLongError):
        run(pipe, source, ids=Identifiers(c_src="zqzqzqzqzqzq"), n_s=5, n_c=5)


def test_reconstruction_branch_reads_the_trained_augmented_source_prompt(pipe, source):
    plain = run(pipe, source, n_s=3, n_c=2)
    trained = run(pipe, source, n_s=3, n_c=2, rec_n_s=3, rec_n_c=2)
    assert plain.prompts["rec"].count("ak47 not aug") == 1
    assert trained.prompts["rec"].count("ak47 not aug") == 3
    assert trained.prompts["rec"].count("sks not m4a1") == 2
    assert trained.content_map != plain.content_map
    # the reconstruction branch runs another prompt, so it denoises to other latents
    assert (trained.latents[0] - plain.latents[0]).abs().amax() > 1e-4
