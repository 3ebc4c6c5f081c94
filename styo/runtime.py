"""How long the sd15 path takes on a free Colab T4, estimated before anything runs.

No GPU has measured a chapter yet, so the time a reader should plan for comes from arithmetic:
the floating-point work of each step, counted exactly on the meta device (:func:`count_flops`;
no memory, no weights), divided by the rate a T4 sustains on Stable Diffusion. That rate is
calibrated on a published measurement rather than the T4's datasheet peak (65 TFLOPS in fp16),
which real UNets never approach: diffusers' PyTorch 2.0 benchmark
(``docs/source/en/optimization/torch2.0.mdx``, "T4 (batch size: 1)") runs SD 1.5 text-to-image at
6.9 iterations per second in fp16 with scaled-dot-product attention; one iteration is two UNet
calls (classifier-free guidance), 2 × 0.803 TFLOP, so the T4 sustains about 11 TFLOPS.

Training is counted as three forward passes per step (the forward pass, and a backward pass of
about twice its work), plus one more with gradient checkpointing (each block is run again during
the backward pass). The optimizer step and data movement are left out: they are small beside
these at 512² on a T4. ``benchmarks/sd_scale.py`` measures the real figures on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Work of one call at 512² (64² latents), batch 1: SD 1.5's UNet, and its VAE decoding one image
# and encoding one; counted by :func:`sd15_flops` (tests recount them).
SD15_UNET_TFLOP = 0.803
SD15_VAE_DECODE_TFLOP = 2.515
SD15_VAE_ENCODE_TFLOP = 1.117
# fp16 work a T4 sustains on SD 1.5 (module doc: 6.9 it/s × 2 UNet calls × 0.803 TFLOP).
T4_TFLOPS = 6.9 * 2 * SD15_UNET_TFLOP


def count_flops(module: Any, *args: Any, **kwargs: Any) -> float:
    """Floating-point operations of one call ``module(*args, **kwargs)``, by torch's FLOP counter.

    Works on the meta device, so SD 1.5 is counted without memory or weights.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*args, **kwargs)
    return float(counter.get_total_flops())


def sd15_flops(image_size: int = 512) -> dict[str, float]:
    """TFLOP of one UNet call, one VAE decoding and one VAE encoding of SD 1.5 at ``image_size``,
    batch 1, counted on the meta device from SD 1.5's own configs."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from .sd15_shaped import SD15_UNET, SD15_VAE

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(SD15_UNET)
        vae = AutoencoderKL.from_config(SD15_VAE)
        side = image_size // 8
        latent = torch.zeros(1, 4, side, side)
        text = torch.zeros(1, 77, SD15_UNET["cross_attention_dim"])
        image = torch.zeros(1, 3, image_size, image_size)
        step = torch.full((1,), 10)
    return {
        "unet": count_flops(unet, latent, step, encoder_hidden_states=text) / 1e12,
        "vae_decode": count_flops(vae.decode, latent) / 1e12,
        "vae_encode": count_flops(vae.encode, image) / 1e12,
    }


@dataclass(frozen=True)
class Estimate:
    """Seconds of each unit of the sd15 path on a T4; ``str()`` is the table a chapter prints."""

    aux_set: float  # the auxiliary portraits, generated once per cache
    idl: float  # one IDL run
    stylized_picture: float  # one picture of ``stylize``: both branches, guidance, one decode
    generated_picture: float  # one plain text-to-image picture
    profile: str

    def __str__(self) -> str:
        def minutes(s: float) -> str:
            return f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"

        return (f"Time at a free Colab T4's speed (profile {self.profile!r}; estimated from FLOPs, "
                "not measured; a larger GPU is faster): "
                f"auxiliary set {minutes(self.aux_set)} (once, then cached), "
                f"IDL {minutes(self.idl)} (once per setting, then cached), "
                f"{minutes(self.stylized_picture)} per stylized picture, "
                f"{minutes(self.generated_picture)} per generated picture.")


def estimate_t4(profile: str = "sd-t4", strength: float | None = None, idl_steps: int | None = None,
                tflops: float = T4_TFLOPS) -> Estimate:
    """Seconds of each unit of the sd15 path under ``profile`` (:data:`styo.profiles.PROFILES`).

    A stylized picture runs ``strength × sample_steps`` denoising steps of four UNet rows (the
    reconstruction and stylization branches, each with and without the prompt); a generated one
    runs every step with two rows; each decodes one image. IDL's step trains on the source, the
    target and one auxiliary portrait (three UNet rows). ``strength`` and ``idl_steps`` default to
    the profile's own.
    """
    from .profiles import PROFILES

    p = PROFILES[profile]
    strength = p["strength"] if strength is None else strength
    unet, decode = SD15_UNET_TFLOP, SD15_VAE_DECODE_TFLOP
    generated = (p["sample_steps"] * 2 * unet + decode) / tflops
    stylized = (int(strength * p["sample_steps"]) * 4 * unet + SD15_VAE_ENCODE_TFLOP + decode) / tflops
    passes = 3 + (1 if p.get("gradient_checkpointing") else 0)
    idl = (idl_steps or p["steps"]) * 3 * passes * unet / tflops
    return Estimate(aux_set=p["aux"] * generated, idl=idl, stylized_picture=stylized,
                    generated_picture=generated, profile=profile)
