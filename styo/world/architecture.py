"""The miniature world's model: Stable Diffusion's architecture, shrunk to 64×64 portraits.

Same classes as SD v1.x (AutoencoderKL, CLIPTextModel, UNet2DConditionModel, DDPM/DDIM), so the
StyO code cannot tell it from the real thing. Sizes follow the feasibility probe in docs/design.md §3:
a 4× VAE (16×16×4 latents), a ~6 M-parameter UNet with cross-attention at 16², 8² and the 4²
mid block, and a 3-layer text encoder trained jointly from scratch.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..tokenizer import build_clip_tokenizer
from .captions import vocabulary

IMAGE_SIZE = 64
LATENT_SIZE = 16
TEXT_DIM = 128
# Rare words, as in SD: the tokenizer knows them (``ak47`` → ak 4 7) but no caption uses them.
IDENTIFIER_WORDS = ("ak47", "aug", "sks", "m4a1")
_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)


def build_tokenizer(names: tuple[str, ...] = ()) -> CLIPTokenizer:
    """CLIP BPE over the caption vocabulary plus the identifiers, 77 positions like SD; ``names``
    (a cast of people, :mod:`styo.world.people`) join the vocabulary when the captions use them."""
    return build_clip_tokenizer([*vocabulary(), *names, *IDENTIFIER_WORDS])


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=IMAGE_SIZE,
    )


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_DIM,
            intermediate_size=4 * TEXT_DIM,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,  # diffusers' legacy name: this is the number of heads, as in SD
        norm_num_groups=32,
    )


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**_SCHEDULE)


def sample_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
