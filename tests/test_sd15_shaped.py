"""The SD-1.5-shaped CI pipeline has SD 1.5's architecture and loads like SD 1.5's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from diffusers import StableDiffusionPipeline

from styo import book
from styo import sd15_shaped as S
from styo.pipeline import image_size

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_builds_sd15_from_these_configs_without_importing_diffusers_early():
    """sd_scale.py sets HF_HUB_OFFLINE before diffusers is imported, so taking SD 1.5's configs
    from this module must not import diffusers (nor change the environment)."""
    script = (
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('sd_scale', {str(ROOT / 'benchmarks' / 'sd_scale.py')!r})\n"
        "bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)\n"
        "from styo import sd15_shaped as S\n"
        "assert bench.SD15_UNET is S.SD15_UNET and bench.SD15_VAE is S.SD15_VAE\n"
        "assert bench.SD15_TEXT is S.SD15_TEXT and bench.SD15_SCHEDULER is S.SD15_SCHEDULER\n"
        "assert 'diffusers' not in sys.modules, 'diffusers imported before main()'\n"
        "assert 'HF_HUB_OFFLINE' not in os.environ\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


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
