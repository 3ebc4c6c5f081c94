"""The SD-1.5-shaped CI pipeline has SD 1.5's architecture and loads like SD 1.5's folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from diffusers import StableDiffusionPipeline

from styo import book
from styo import sd15_shaped as S
from styo.pipeline import image_size

ROOT = Path(__file__).resolve().parent.parent


def test_its_configs_are_the_benchmarks_sd15_configs():
    spec = importlib.util.spec_from_file_location("sd_scale", ROOT / "benchmarks" / "sd_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert S.SD15_UNET == bench.SD15_UNET and S.SD15_VAE == bench.SD15_VAE
    assert S.SD15_TEXT == bench.SD15_TEXT and S.SD15_SCHEDULER == bench.SD15_SCHEDULER


def test_the_shaped_backend_loads_sd15s_architecture_from_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("STYO_CACHE", str(tmp_path))
    seen = []
    real = StableDiffusionPipeline.from_pretrained.__func__

    def spy(cls, model, **kwargs):
        seen.append(Path(model))
        return real(cls, model, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", classmethod(spy))
    pipe = book.load_backend("sd15-shaped", device="cpu")
    assert seen == [tmp_path / "models" / "sd15-shaped"]  # the from_pretrained path, as SD 1.5
    unet, vae, text = pipe.unet.config, pipe.vae.config, pipe.text_encoder.config
    assert tuple(unet.down_block_types) == S.SD15_UNET["down_block_types"]  # four levels, no attention deepest
    assert tuple(unet.up_block_types) == S.SD15_UNET["up_block_types"]
    assert len(unet.block_out_channels) == 4 and unet.attention_head_dim == 8
    assert unet.cross_attention_dim == text.hidden_size == 768
    assert pipe.vae_scale_factor == 8 and vae.latent_channels == 4 and vae.scaling_factor == 0.18215
    assert pipe.tokenizer.model_max_length == text.max_position_embeddings == 77
    assert image_size(pipe) == 128 and pipe.scheduler.config.beta_schedule == "scaled_linear"
    words = "a drawing with aug not sks style of portrait"
    assert len(pipe.tokenizer(words).input_ids) == len(words.split()) + 2  # whole words, BOS, EOS
    assert len(pipe.tokenizer("ak47").input_ids) == 3 + 2  # CLIP's rule: each digit on its own
    again = book.load_backend("sd15-shaped", device="cpu")  # built once, then reused
    assert (tmp_path / "models" / "sd15-shaped" / "sd15-shaped.json").is_file()
    for a, b in zip(pipe.unet.parameters(), again.unet.parameters(), strict=True):
        assert a.equal(b)
