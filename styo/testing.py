"""A tiny random Stable-Diffusion-shaped pipeline, built in memory in well under a second.

Unit tests need the real diffusers classes (so attention processors, schedulers and
``save_pretrained`` behave exactly as with SD) but not real weights. Every module has SD's shape:
a UNet with cross-attention at two resolutions and in the mid block, a KL autoencoder, a CLIP text
encoder and CLIP-format tokenizer, and a DDIM scheduler.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .pipeline import assemble_pipeline
from .tokenizer import build_clip_tokenizer

TINY_WORDS = (
    "a drawing with not style of portrait photo painting face person picture cartoon sketch "
    "ak47 aug sks m4a1 the and in man woman"
).split()
TINY_IMAGE_SIZE = 16


def tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Random-weight SD-shaped pipeline on 16×16 images (8×8 latents); deterministic in ``seed``."""
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(TINY_WORDS)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = assemble_pipeline(vae, text_encoder, tokenizer, unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
