"""StyO's two-branch stylization sampler with the Fine-grained Content Controller (FCC).

The source image is encoded with the VAE and forward-diffused to a chosen depth; the
reconstruction branch (source prompt) and the stylization branch (augmented recombination prompt)
then denoise from that same latent with the same scheduler, as one UNet batch
``[uncond_rec, uncond_sty, cond_rec, cond_sty]`` (see :mod:`styo.attention`), while the
stylization branch's cross-attention maps of the content tokens are taken from the reconstruction
branch. Works on any ``StableDiffusionPipeline``: the tiny test pipeline, the miniature world, SD-1.5.

Choices the paper leaves open (docs/design.md §1), with our defaults:

- ``strength=0.8``: the source latent is diffused through the last 80 % of the DDIM schedule
  (img2img's convention). Deep enough for the style to change, shallow enough to keep the pose
  and coarse layout; the book sweeps it.
- ``control_steps=(0.0, 1.0)``: FCC on every denoising step that is run, given as a fraction range
  of those steps (``(0.0, 0.5)`` controls the first half).
- The source latent is the VAE posterior *mean* (not a sample): deterministic, and the diffusion
  noise dominates the posterior's tiny variance anyway.
- DDIM with ``eta=0``, built from the pipeline's scheduler config; the pipeline's own scheduler is
  left untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from .attention import AttentionController, AttentionRecorder, attention_control
from .pipeline import image_size
from .profiles import PAPER_SD
from .prompts import (
    DEFAULT_IDS,
    Identifiers,
    check_length,
    content_index_map,
    source_prompt,
    stylization_prompt,
)


@dataclass
class StylizeResult:
    """Output of :func:`stylize`."""

    images: list[PIL.Image.Image]
    reconstruction: PIL.Image.Image
    reconstructions: list[PIL.Image.Image]
    prompts: dict[str, str]
    content_map: list[tuple[int, int]]
    latents: torch.Tensor  # final latents [rec × B, sty × B], before VAE decoding
    maps: AttentionRecorder | None = None
    timesteps: list[int] = field(default_factory=list)


def to_tensor(pipe: Any, image: PIL.Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """A [1, 3, S, S] tensor in [-1, 1] at the pipeline's image size, on its device and VAE dtype.

    PIL images are converted to RGB and resized with the pipeline's image processor, so the
    source is seen at the resolution the model knows; arrays and tensors follow diffusers'
    ``VaeImageProcessor`` conventions (values in [0, 1]).
    """
    if isinstance(image, PIL.Image.Image):
        image = image.convert("RGB")
    size = image_size(pipe)
    x = pipe.image_processor.preprocess(image, height=size, width=size)
    return x.to(device=pipe._execution_device, dtype=pipe.vae.dtype)


@torch.no_grad()
def encode_image(
    pipe: Any,
    image: PIL.Image.Image | np.ndarray | torch.Tensor,
    generator: torch.Generator | None = None,
    sample: bool = False,
) -> torch.Tensor:
    """Scaled latents of ``image`` (posterior mean unless ``sample``), as the UNet expects them."""
    dist = pipe.vae.encode(to_tensor(pipe, image)).latent_dist
    latents = dist.sample(generator) if sample else dist.mean
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * pipe.vae.config.scaling_factor


@torch.no_grad()
def decode_latents(pipe: Any, latents: torch.Tensor) -> list[PIL.Image.Image]:
    """PIL images from scaled latents."""
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    latents = latents / pipe.vae.config.scaling_factor + shift
    images = pipe.vae.decode(latents.to(pipe.vae.dtype)).sample
    return pipe.image_processor.postprocess(images, output_type="pil")


def denoising_timesteps(
    scheduler: Any, num_inference_steps: int, strength: float, device: Any = None
) -> torch.Tensor:
    """The timesteps run when starting at depth ``strength`` (img2img's convention)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    scheduler.set_timesteps(num_inference_steps, device=device)
    run = min(int(num_inference_steps * strength), num_inference_steps)
    if run < 1:
        raise ValueError(
            f"strength={strength} with {num_inference_steps} steps runs no step; raise either"
        )
    start = (num_inference_steps - run) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def step_range(num_steps: int, fractions: tuple[float, float], name: str = "control_steps") -> set[int]:
    """Step indices i with ``lo <= i / num_steps < hi`` (``hi == 1`` includes the last step)."""
    lo, hi = fractions
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"{name} must satisfy 0 <= start <= end <= 1, got {fractions}")
    return {i for i in range(num_steps) if lo * num_steps <= i < hi * num_steps}


def forward_diffuse(
    scheduler: Any, latents: torch.Tensor, timestep: torch.Tensor, generator: Any = None
) -> torch.Tensor:
    """q(z_t | z_0): noise the clean latents to ``timestep`` with noise from ``generator``."""
    noise = randn_tensor(
        latents.shape, generator=generator, device=latents.device, dtype=latents.dtype
    )
    return scheduler.add_noise(latents, noise, timestep.reshape(1).to(latents.device))


def _step_kwargs(scheduler: Any, generator: Any, eta: float) -> dict[str, Any]:
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def encode_prompts(
    pipe: Any, prompts: Sequence[str], per_prompt: int, guidance: bool, negative_prompt: str = ""
) -> torch.Tensor:
    """Text embeddings ``[uncond..., cond...]`` (or only cond), each prompt ``per_prompt`` times.

    Every prompt is length-checked first: the encoder would silently truncate it.
    """
    for p in [*prompts, negative_prompt]:
        check_length(pipe.tokenizer, p)
    cond, uncond = pipe.encode_prompt(
        list(prompts),
        pipe._execution_device,
        per_prompt,
        guidance,
        negative_prompt=[negative_prompt] * len(prompts),
    )
    return torch.cat([uncond, cond]) if guidance else cond


def copied_content_encodings(
    embeds: torch.Tensor, content_map: Sequence[tuple[int, int]], per_prompt: int, guidance: bool
) -> torch.Tensor:
    """``embeds`` (``[uncond..., rec × per_prompt, sty × per_prompt]``, or only the conditional
    half) with the stylization prompt's content tokens given the reconstruction's encodings.

    FCC copies *where* the content words act (their attention maps), not *what* they say (their
    keys and values, computed from the text encodings). A causal text encoder writes every earlier
    word into each later one, and in the stylization prompt the content words come after the
    target's style phrase, so they carry some of the target image with them. Copying their
    encodings too makes them say what they say in the reconstruction. An extension, not the
    paper's method; the unconditional half is left as it is.
    """
    out = embeds.clone()
    cond = out[len(out) - 2 * per_prompt:] if guidance else out
    rec, sty = cond[:per_prompt], cond[per_prompt:]  # views into ``out``
    for sty_index, rec_index in content_map:
        sty[:, sty_index] = rec[:, rec_index]
    return out


@torch.no_grad()
def stylize(
    pipe: Any,
    source_image: PIL.Image.Image | np.ndarray | torch.Tensor,
    *,
    ids: Identifiers = DEFAULT_IDS,
    n_s: int = 3,
    n_c: int = 1,
    negative: bool = True,
    rec_n_s: int = 1,
    rec_n_c: int = 1,
    num_inference_steps: int = PAPER_SD["sample_steps"],
    guidance_scale: float = PAPER_SD["guidance"],
    strength: float = PAPER_SD["strength"],
    control_steps: tuple[float, float] = (0.0, 1.0),
    fcc: bool = True,
    content_map: Sequence[tuple[int, int]] | None = None,
    share_self_attention: bool = False,
    self_attention_steps: tuple[float, float] | None = None,
    copy_content_encodings: bool = False,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    record: bool | AttentionRecorder = False,
    num_images: int = 1,
    eta: float = 0.0,
    negative_prompt: str = "",
) -> StylizeResult:
    """Stylize ``source_image`` with StyO's two branches and FCC; see the module docstring.

    ``rec_n_s``/``rec_n_c`` repeat the reconstruction prompt's phrases: set them to the IDL run's
    ``train_n_s``/``train_n_c`` so the reconstruction branch reads the prompt the source image was
    trained with (training-time augmentation); 1 otherwise.
    ``content_map`` overrides the computed (stylization, reconstruction) token pairs (e.g. ``[]``
    or a subset, for ablations). ``share_self_attention`` is an extension, not the paper's method;
    it shares over ``self_attention_steps`` (a fraction range like ``control_steps``; ``None``: the
    same steps as FCC), as prompt-to-prompt injects self-attention for only the first steps.
    ``copy_content_encodings`` is another extension: with FCC, the stylization prompt's content
    words also take the reconstruction prompt's text encodings (:func:`copied_content_encodings`).
    ``record`` is ``True`` (default recorder) or an :class:`AttentionRecorder`. Each of the
    ``num_images`` pairs gets its own forward-diffusion noise; the result is deterministic in
    ``seed`` or ``generator``.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if generator is None and seed is not None:
        generator = torch.Generator("cpu").manual_seed(seed)
    prompts = {
        "rec": source_prompt(ids, negative, rec_n_s, rec_n_c),
        "sty": stylization_prompt(ids, n_s, n_c, negative),
    }
    guidance = guidance_scale > 1.0
    embeds = encode_prompts(
        pipe, [prompts["rec"], prompts["sty"]], num_images, guidance, negative_prompt
    )
    if content_map is None:
        content_map = content_index_map(pipe.tokenizer, ids, n_s, n_c, negative, rec_n_s, rec_n_c)
    if fcc and copy_content_encodings:
        embeds = copied_content_encodings(embeds, content_map, num_images, guidance)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    timesteps = denoising_timesteps(
        scheduler, num_inference_steps, strength, pipe._execution_device
    )

    source = encode_image(pipe, source_image).to(pipe.unet.dtype)
    latents = forward_diffuse(
        scheduler, source.expand(num_images, -1, -1, -1), timesteps[0], generator
    )
    latents = torch.cat([latents, latents])  # [rec × B, sty × B] from the same noisy latents

    recorder = _recorder(record, pipe, prompts)
    controller = AttentionController(
        content_map if fcc else [],
        control_steps=step_range(len(timesteps), control_steps),
        recorder=recorder,
        guidance=guidance,
        share_self_attention=fcc and share_self_attention,
        self_attention_steps=None if self_attention_steps is None
        else step_range(len(timesteps), self_attention_steps, "self_attention_steps"),
        latent_size=tuple(latents.shape[-2:]),
    )
    latents = _denoise(
        pipe,
        scheduler,
        timesteps,
        latents,
        embeds,
        controller,
        guidance_scale,
        _step_kwargs(scheduler, generator, eta),
    )
    decoded = decode_latents(pipe, latents)
    return StylizeResult(
        images=decoded[num_images:],
        reconstruction=decoded[0],
        reconstructions=decoded[:num_images],
        prompts=prompts,
        content_map=list(content_map),
        latents=latents,
        maps=recorder,
        timesteps=[int(t) for t in timesteps],
    )


def _recorder(
    record: bool | AttentionRecorder, pipe: Any, prompts: dict[str, str]
) -> AttentionRecorder | None:
    if record is False:
        return None
    recorder = AttentionRecorder() if record is True else record
    recorder.tokenizer = pipe.tokenizer
    recorder.prompts = dict(prompts)
    recorder.image_size = (image_size(pipe), image_size(pipe))
    return recorder


def _denoise(
    pipe: Any,
    scheduler: Any,
    timesteps: torch.Tensor,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    controller: AttentionController,
    guidance_scale: float,
    step_kwargs: dict[str, Any],
) -> torch.Tensor:
    """The DDIM loop over both branches; processors installed only when they have work to do."""
    guidance = controller.guidance
    hooks = controller.content_map or controller.recorder or controller.share_self_attention
    ctx = attention_control(pipe.unet, controller) if hooks else nullcontext(controller)
    with ctx, pipe.progress_bar(total=len(timesteps)) as bar:
        for i, t in enumerate(timesteps):
            controller.step = i
            model_in = torch.cat([latents, latents]) if guidance else latents
            model_in = scheduler.scale_model_input(model_in, t)
            noise = pipe.unet(model_in, t, encoder_hidden_states=embeds).sample
            if guidance:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(noise, t, latents, **step_kwargs).prev_sample
            bar.update()
    return latents
