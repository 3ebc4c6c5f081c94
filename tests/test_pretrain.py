"""Pretraining of the miniature world: a killed run resumes to the same weights."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline

from styo.world import pretrain as pt

TINY = dict(n_images=48, vae_images=40, vae_steps=4, vae_batch=4, unet_steps=4, unet_batch=4, checkpoint_every=2, warmup=2)


def _unet_weights(folder):
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}, pipe


@pytest.mark.slow
def test_interrupted_pretraining_resumes_to_the_same_pipeline(tmp_path, monkeypatch):
    cfg = pt.PretrainConfig(**TINY)
    pt.pretrain(tmp_path / "straight", tmp_path / "work-straight", cfg, device="cpu")

    real_save = pt.save_checkpoint
    calls = {"n": 0}

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        if "unet-checkpoints" in str(args[0]):
            calls["n"] += 1
            raise KeyboardInterrupt  # as if killed right after the step-2 checkpoint

    monkeypatch.setattr(pt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain(tmp_path / "resumed", tmp_path / "work-resumed", cfg, device="cpu")
    assert calls["n"] == 1 and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(pt, "save_checkpoint", real_save)
    pt.pretrain(tmp_path / "resumed", tmp_path / "work-resumed", cfg, device="cpu")

    straight, pipe = _unet_weights(tmp_path / "straight")
    resumed, _ = _unet_weights(tmp_path / "resumed")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    # The saved folder is a complete SD pipeline with the world's tokenizer and latent scale.
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.vae.config.scaling_factor != 0.18215
    assert pipe.unet.config.sample_size * 4 == 64
    assert sorted(p.suffix for p in (tmp_path / "straight" / "unet").iterdir()) == [".json", ".safetensors"]


def test_lr_schedule_warms_up_then_decays():
    f = [pt._lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] < f[9] == pytest.approx(1.0) and f[10] > f[50] > f[99] >= 0.1


def test_vae_sees_every_style_but_the_text_to_image_data_never_a_held_out_one(tmp_path):
    from styo.world.attributes import HELD_OUT_STYLES, STYLES

    cfg = pt.PretrainConfig(n_images=60, vae_images=60)
    vae_styles = {STYLES[i] for i in pt.build_vae_dataset(tmp_path, cfg)["styles"]}
    t2i_styles = {STYLES[i] for i in pt.build_dataset(tmp_path, cfg)["styles"]}
    assert set(HELD_OUT_STYLES) <= vae_styles
    assert not set(HELD_OUT_STYLES) & t2i_styles
