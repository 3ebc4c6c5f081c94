"""An SD-1.5-*shaped* pipeline for CI: SD 1.5's own configs, channels scaled down, random weights.

The sd15 path cannot be downloaded in CI, and the miniature model differs from SD 1.5 in ways
that a chapter could silently depend on (64² images, a 2-level UNet, its own tokenizer). This
pipeline has SD 1.5's architecture where it matters for the code: an f = 8 VAE with
4 latent channels and SD's scaling factor, a UNet with SD's four levels and block types (cross-
attention in the first three levels and the mid block, none in the deepest), 8 attention heads
and 768-wide cross-attention, a CLIP text encoder with 77 positions and 768-wide states, a CLIP
byte-level BPE tokenizer (built offline on the book's words), and SD's scheduler. Only the widths
and depths that cost time, and the image size (128², below), are scaled down, so its pictures
are noise and a chapter runs in minutes on a CPU.

It is written once into ``<cache>/models/sd15-shaped`` by ``save_pretrained`` and loaded back
through :func:`styo.pipeline.load_pipeline`, the very path SD 1.5's hub folder takes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

# SD 1.5's unet/, vae/, text_encoder/ and scheduler/ configs (the keys diffusers and transformers
# read), as published with stable-diffusion-v1-5/stable-diffusion-v1-5; benchmarks/sd_scale.py
# builds full-size SD 1.5 from these same dicts.
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    "attention_dropout": 0.0,
    "dropout": 0.0,
}
SD15_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}

# What is scaled down: channel widths (÷10 in the UNet, ÷4 in the VAE, keeping SD's 32 norm
# groups), the text encoder's depth and vocabulary. Everything else is SD 1.5's.
# The resolution is scaled too, to 128² images (16² latents): at 512² one IDL step of even this
# narrow UNet takes about 40 s on two CPU cores, which no CI run of every chapter can afford.
# 128 is neither the miniature world's 64 nor SD's 512, so a size assumed anywhere still breaks.
SHAPED_UNET = {**SD15_UNET, "block_out_channels": (32, 64, 128, 128), "sample_size": 16}
SHAPED_VAE = {**SD15_VAE, "block_out_channels": (32, 64, 128, 128), "sample_size": 128}
SHAPED_TEXT = {**SD15_TEXT, "num_hidden_layers": 1, "intermediate_size": 768}
# The words of the book's prompts on the sd15 path (templates, identifiers, the aux prompt), so
# that they tokenize to whole words as with CLIP; any other text still tokenizes byte by byte.
WORDS = (
    "a drawing photo portrait of person face high quality with not style the and in picture "
    "painting cartoon sketch man woman ak47 aug sks m4a1"
).split()
VERSION = 1  # bump when the recipe changes, so an old cached folder is rebuilt


def build_pipeline(seed: int = 0):
    """The SD-1.5-shaped pipeline in memory, deterministic in ``seed``."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .pipeline import assemble_pipeline
    from .tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(WORDS, model_max_length=SD15_TEXT["max_position_embeddings"])
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(
        **{**SHAPED_TEXT, "vocab_size": len(tokenizer)},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    pipe = assemble_pipeline(
        AutoencoderKL(**SHAPED_VAE), text, tokenizer, UNet2DConditionModel(**SHAPED_UNET),
        PNDMScheduler.from_config(SD15_SCHEDULER),
    )
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    return pipe


def ensure_folder(root: str | os.PathLike) -> Path:
    """``<root>/sd15-shaped``, a diffusers pipeline folder, built once (atomically) and reused."""
    folder = Path(root) / "sd15-shaped"
    stamp = folder / "sd15-shaped.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == VERSION:
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_pipeline().save_pretrained(tmp, safe_serialization=True)
    (tmp / "sd15-shaped.json").write_text(json.dumps({"version": VERSION}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder
