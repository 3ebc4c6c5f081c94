"""How much GPU memory IDL fine-tuning needs, estimated before anything is loaded.

A free Colab T4 has 15 GB (14.75 GiB) of GPU memory. Fine-tuning all of SD 1.5's UNet the plain
way (fp32 master weights, fp32 gradients, Adam's two fp32 moments) holds 16 bytes per UNet
parameter, 12.8 GiB, before a single activation is stored; so the sd15 path has to pick its
training options by the GPU it finds. This module adds up what an IDL step keeps on the GPU at its
peak, term by term, so that a reader sees *why* an option is needed and the choice is made from
the same numbers (:func:`choose_sd_profile`).

The weight, gradient and optimizer terms are exact byte counts from the parameter counts. The
activation term is the one estimate: the tensors autograd keeps for the backward pass of one
SD-1.5 UNet call on one 64×64 latent (a 512² image) were counted on the meta device (no memory
needed; see ``benchmarks/sd_scale.py`` for the configs): 1.13 GiB in fp16 with memory-efficient
attention, which never stores the 4096×4096 attention matrices. It is rounded up to 1.25 GiB for the
group norms that fp16 autocast keeps in fp32, doubled for fp32 training, and scaled by latent area
and batch. With gradient checkpointing the UNet keeps only each checkpointed block's input (12.7 %
of that, counted the same way) plus, during the backward pass, the recomputed activations of one
block (the largest, the last up block at 64×64, holds 29 %). The GPU measurement that should
confirm these figures is ``benchmarks/sd_scale.py`` on a CUDA machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3
# Bytes autograd keeps per sample for one SD-1.5 UNet call at a 64×64 latent, fp16 autocast,
# memory-efficient attention (1.13 GiB counted, rounded up for fp32 norm outputs; module doc).
ACTIVATIONS_PER_SAMPLE_64 = 1.25 * GIB
REFERENCE_LATENT = 64
# Share of those activations kept with gradient checkpointing: block inputs (12.7 %) plus the
# recomputed activations of the largest block during its backward pass (29 %).
CHECKPOINTED_SHARE = 0.127 + 0.29
# CUDA context, cuBLAS/cuDNN workspaces and allocator fragmentation: outside the tensors counted.
CUDA_OVERHEAD = 0.75 * GIB
# How much of a GPU's memory a profile may plan to use: the rest is headroom for the estimate's
# error and for what the notebook itself holds.
USABLE_SHARE = 0.95


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a pipeline's modules, and what LoRA and the activations scale with.

    ``lora_width`` is the sum of in + out features of the projections LoRA adapts (to_q, to_k,
    to_v, to_out.0): a rank-r adapter has ``r * lora_width`` parameters.
    """

    unet: int
    text_encoder: int
    vae: int
    lora_width: int = 0
    latent_size: int = REFERENCE_LATENT


# SD 1.5's published weights (benchmarks/sd_scale.py rebuilds the architecture and checks them).
SD15_COUNTS = ParamCounts(
    unet=859_520_964, text_encoder=123_060_480, vae=83_653_863, lora_width=199_296, latent_size=64
)

_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def param_counts(pipe: Any) -> ParamCounts:
    """The :class:`ParamCounts` of a loaded pipeline (works on the meta device too)."""
    import torch

    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters())

    width = sum(
        m.in_features + m.out_features
        for name, m in pipe.unet.named_modules()
        if isinstance(m, torch.nn.Linear) and name.endswith(_LORA_TARGETS)
    )
    return ParamCounts(
        unet=count(pipe.unet),
        text_encoder=count(pipe.text_encoder),
        vae=count(pipe.vae),
        lora_width=width,
        latent_size=int(pipe.unet.config.sample_size),
    )


def saved_activation_bytes(unet: Any, latent_size: int, batch: int = 1,
                           checkpointing: bool = False) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one UNet call, in fp16.

    How the activation constants above were measured, kept runnable: ``unet`` is best built on
    the meta device (no memory, about a second for SD 1.5). Weights are not counted (they exist
    anyway), nor attention-score matrices (tokens × tokens), which memory-efficient attention,
    the CUDA default, never stores.
    """
    import torch

    unet.to(torch.float16).train()
    was = unet.is_gradient_checkpointing
    if checkpointing:
        unet.enable_gradient_checkpointing()
    params = {id(p) for p in unet.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        square = t.dim() >= 2 and t.shape[-1] == t.shape[-2] >= 256
        if id(base) not in params and not square:
            kept[id(t)] = t.numel() * t.element_size()
        return t

    device = next(unet.parameters()).device
    x = torch.zeros(batch, unet.config.in_channels, latent_size, latent_size, device=device,
                    dtype=torch.float16)
    text = torch.zeros(batch, 77, unet.config.cross_attention_dim, device=device,
                       dtype=torch.float16)
    steps = torch.full((batch,), 10, device=device)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            unet(x, steps, encoder_hidden_states=text)
    finally:
        if checkpointing and not was:
            unet.disable_gradient_checkpointing()
    return sum(kept.values())


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak GPU memory of an IDL step, as named parts in bytes; ``str()`` is a table in GiB."""

    parts: dict[str, float] = field(default_factory=dict)
    title: str = "IDL peak GPU memory (estimate)"

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    def __str__(self) -> str:
        width = max(len(k) for k in self.parts) if self.parts else 10
        lines = [self.title]
        lines += [f"  {name:<{width}s} {value / GIB:6.2f} GiB" for name, value in self.parts.items()]
        lines.append(f"  {'total':<{width}s} {self.total_gib:6.2f} GiB")
        return "\n".join(lines)


def _adam_bytes(eight_bit: bool) -> int:
    """Adam's two moments per parameter: fp32 each, or one byte each in bitsandbytes' 8-bit
    AdamW (its per-block scales add under 0.2 %)."""
    return 2 if eight_bit else 8


def estimate_idl_memory(
    counts: ParamCounts,
    config: Any,
    *,
    pipeline_bytes: int = 2,
    n_terms: int | None = None,
) -> MemoryEstimate:
    """Estimate the peak GPU memory of one IDL step from parameter counts and an IDLConfig.

    ``config`` needs the fields of :class:`styo.idl.IDLConfig` that shape memory:
    ``mixed_precision``, ``use_8bit_adam``, ``gradient_checkpointing``, ``train_text_encoder``,
    ``lora_rank``, ``batch_size`` and ``use_aux``. ``pipeline_bytes`` is the size of one weight
    of the pipeline as loaded (2: fp16 on CUDA), which frozen modules keep. The UNet's batch is
    ``n_terms * batch_size`` (three terms with the auxiliary set, as in :func:`styo.idl.train`).
    """
    mixed = config.mixed_precision != "no"
    adam = _adam_bytes(config.use_8bit_adam)
    parts: dict[str, float] = {}
    if config.lora_rank is None:
        trained = counts.unet
        # Trainable weights are fp32 (Adam's 1e-6 steps vanish in fp16); so are their gradients.
        parts["UNet weights (fp32, trained)"] = 4 * counts.unet
    else:
        trained = config.lora_rank * counts.lora_width
        frozen = pipeline_bytes if mixed else 4
        parts[f"UNet weights ({8 * frozen}-bit, frozen)"] = frozen * counts.unet
        parts[f"LoRA rank {config.lora_rank} weights (fp32)"] = 4 * trained
    parts["UNet gradients (fp32)"] = 4 * trained
    parts["Adam moments" + (" (8-bit)" if config.use_8bit_adam else " (fp32)")] = adam * trained
    if config.train_text_encoder:
        parts["text encoder weights + gradients (fp32)"] = 8 * counts.text_encoder
        parts["text encoder Adam moments"] = adam * counts.text_encoder
    else:
        parts["text encoder (frozen)"] = pipeline_bytes * counts.text_encoder
    parts["VAE (frozen)"] = pipeline_bytes * counts.vae

    batch = (n_terms or (3 if config.use_aux else 2)) * config.batch_size
    per_sample = ACTIVATIONS_PER_SAMPLE_64 * (counts.latent_size / REFERENCE_LATENT) ** 2
    per_sample *= 1 if mixed else 2
    share = CHECKPOINTED_SHARE if config.gradient_checkpointing else 1.0
    how = "checkpointed" if config.gradient_checkpointing else "all kept"
    parts[f"UNet activations (batch {batch}, {how})"] = share * per_sample * batch
    if mixed and config.lora_rank is None and not config.gradient_checkpointing:
        # Autocast's fp16 copies of the fp32 weights stay referenced until the backward pass;
        # with checkpointing each block re-casts its own during recomputation.
        parts["fp16 weight copies (autocast)"] = 2 * counts.unet
    parts["CUDA context and allocator slack"] = CUDA_OVERHEAD
    return MemoryEstimate(parts)


def profile_config(profile: str, **overrides: Any) -> Any:
    """The :class:`styo.idl.IDLConfig` a profile of :data:`styo.profiles.PROFILES` trains with."""
    from .idl import IDLConfig
    from .profiles import idl_fields

    return IDLConfig(**{**idl_fields(profile), **overrides})


def gpu_memory(device: int = 0) -> int | None:
    """Total memory of a CUDA GPU in bytes, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def choose_sd_profile(
    total_memory: int | None = None,
    counts: ParamCounts = SD15_COUNTS,
    candidates: tuple[str, ...] = ("sd", "sd-t4"),
) -> tuple[str, str]:
    """The first SD profile whose estimated IDL peak fits the GPU, and a sentence saying why.

    ``total_memory`` in bytes; None reads the GPU's (``torch.cuda.get_device_properties``). With no
    GPU the paper's settings (``sd``) are named, since nothing is trained on the GPU then. When no
    candidate fits, the last (smallest) one is chosen and the sentence says it will not fit.
    """
    if total_memory is None:
        total_memory = gpu_memory()
    if total_memory is None:
        return candidates[0], f"no CUDA GPU: the {candidates[0]!r} profile (the paper's settings)"
    budget = USABLE_SHARE * total_memory
    estimates = {p: estimate_idl_memory(counts, profile_config(p)).total for p in candidates}
    have = f"{total_memory / GIB:.1f} GiB GPU"
    for name, need in estimates.items():
        if need <= budget:
            return name, (f"{have}: the {name!r} profile, whose IDL needs about "
                          f"{need / GIB:.1f} GiB (estimated)")
    last = candidates[-1]
    return last, (f"{have}: even the {last!r} profile needs about {estimates[last] / GIB:.1f} "
                  "GiB (estimated); IDL will likely run out of memory. Use a larger GPU.")
