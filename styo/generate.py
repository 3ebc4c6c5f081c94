"""Plain text-to-image generation with cross-attention recorded.

What chapters 2 and 6 and ``styo attention`` show: which image regions each word of a prompt
attends to, from the same recording processors FCC uses (:mod:`styo.attention`).
"""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from diffusers.utils.torch_utils import randn_tensor

from .attention import AttentionController, AttentionRecorder, attention_control
from .pipeline import image_size
from .profiles import PAPER_SD
from .prompts import check_length


def generate_with_attention(
    pipe: Any,
    prompt: str,
    *,
    seed: int = 0,
    num_inference_steps: int = PAPER_SD["sample_steps"],
    guidance_scale: float = PAPER_SD["guidance"],
    progress: bool = True,
) -> tuple[PIL.Image.Image, AttentionRecorder]:
    """One image from ``prompt`` by the pipeline's own sampler, with cross-attention recorded.

    The recorder and its processors work on FCC's two-branch batch (``[uncond_rec, uncond_sty,
    cond_rec, cond_sty]``, :mod:`styo.attention`). A plain generation fills both branches with the
    same prompt and the same starting latent, so both rows are the same image; only the ``sty``
    row is stored. Costs one extra image per step, and reuses the tested processors unchanged.
    Returns ``(image, recorder)``.
    """
    check_length(pipe.tokenizer, prompt)
    size = image_size(pipe)
    latent = size // pipe.vae_scale_factor
    recorder = AttentionRecorder(branches=("sty",))
    recorder.tokenizer, recorder.image_size = pipe.tokenizer, (size, size)
    recorder.prompts = {"rec": prompt, "sty": prompt}
    controller = AttentionController(
        [], recorder=recorder, guidance=guidance_scale > 1.0, latent_size=(latent, latent)
    )
    generator = torch.Generator("cpu").manual_seed(seed)
    shape = (1, pipe.unet.config.in_channels, latent, latent)
    start = randn_tensor(shape, generator=generator, dtype=pipe.unet.dtype)
    start = start.to(pipe.device).repeat(2, 1, 1, 1)

    def next_step(pipeline, i, t, kwargs):  # the controller must know the step of each UNet call
        controller.step = i + 1
        return kwargs

    pipe.set_progress_bar_config(desc="sampling", disable=not progress, dynamic_ncols=True)
    with attention_control(pipe.unet, controller):
        images = pipe(
            [prompt, prompt],
            latents=start,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=size,
            width=size,
            callback_on_step_end=next_step,
        ).images
    return images[1], recorder
