"""How the models are made ready for fine-tuning and put back afterwards.

The plumbing under :func:`styo.idl.train`, kept apart so that the training loop reads as the
method: which weights train and in which precision (fp32 master weights, autocast for the maths),
LoRA through peft, AdamW or bitsandbytes' 8-bit AdamW, accelerate's ``Accelerator``, gradient
checkpointing, and undoing all of it when the run ends (LoRA merged, dtypes restored, eval mode).
"""

from __future__ import annotations

from typing import Any

import torch


def accelerator_for(config: Any, cpu: bool):
    """An Accelerator for this run. In a single process a previous run's (different) precision or
    device choice is reset, so a notebook can train fp32 and then bf16 without a restart."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    kwargs = dict(
        mixed_precision=config.mixed_precision,
        cpu=cpu,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    try:
        return Accelerator(**kwargs)
    except ValueError as e:
        if "already been initialized" not in str(e) or PartialState().num_processes != 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def optimizer_class(config: Any, device: torch.device):
    """AdamW (= Adam with weight_decay 0), fused on CUDA and CPU, or bitsandbytes' 8-bit AdamW.

    Fused on CPU too: one kernel instead of a Python loop over the parameters, which on the
    miniature model's small IDL steps is a visible share of each step.
    """
    if not config.use_8bit_adam:
        return torch.optim.AdamW, {"fused": device.type in ("cuda", "cpu")}
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise ImportError(
            "use_8bit_adam needs bitsandbytes, which is not installed: pip install 'styo[t4]' "
            "(or pip install bitsandbytes), or set use_8bit_adam=False"
        ) from e
    if device.type != "cuda":
        raise ValueError(f"8-bit Adam (bitsandbytes) needs a CUDA GPU; this run is on {device}")
    return bnb.optim.AdamW8bit, {}


def add_lora(unet, rank: int, seed: int) -> None:
    """LoRA on the attention projections through peft; its random init is seeded (repeatable)."""
    from peft import LoraConfig

    lora = LoraConfig(
        r=rank,
        lora_alpha=rank,
        init_lora_weights="gaussian",
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(lora)


def _to_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast only when needed: diffusers warns on every ``.to(dtype)`` of a model."""
    if any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype)
    return module


def prepare_modules(pipe, config: Any, device) -> dict[str, torch.nn.Module]:
    """Freeze, add LoRA, upcast what is trained to fp32; return the trained modules by name.

    Trainable weights must be fp32 (Adam updates of 1e-6 vanish in fp16). Frozen weights keep the
    pipeline's dtype when autocast runs the maths, else become fp32 too.
    """
    unet, te = pipe.unet, pipe.text_encoder
    pipe.vae.requires_grad_(False)
    te.requires_grad_(config.train_text_encoder)
    unet.requires_grad_(config.lora_rank is None)
    if config.lora_rank is not None:
        add_lora(unet, config.lora_rank, config.seed)
        if config.mixed_precision == "no":
            _to_dtype(unet, torch.float32)
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    else:
        _to_dtype(unet, torch.float32)
    trained = {"unet": unet}
    if config.train_text_encoder:
        _to_dtype(te, torch.float32)
        trained["text_encoder"] = te
    pipe.vae.to(device)
    te.to(device)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            _text_checkpointing(te, True)
    return trained


def _text_checkpointing(text_encoder, on: bool) -> None:
    """transformers 5 renamed gradient_* to activation_checkpointing_*; call whichever exists."""
    verb = "enable" if on else "disable"
    method = getattr(text_encoder, f"activation_checkpointing_{verb}", None)
    (method or getattr(text_encoder, f"gradient_checkpointing_{verb}"))()


def trainable_tensors(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Trainable tensors by qualified name; detached views share storage (for saving/loading)."""
    return {
        f"{m}.{n}": p.detach()
        for m, mod in modules.items()
        for n, p in mod.named_parameters()
        if p.requires_grad
    }


def restore_modules(pipe, accelerator, wrapped, config: Any, dtypes, merge: bool) -> None:
    """Undo the training set-up: LoRA merged (or, after a failure, dropped so the base is intact
    for a resume), original dtypes, eval mode, gradient checkpointing off."""
    for module in wrapped.values():
        accelerator.unwrap_model(module, keep_fp32_wrapper=False)  # removes the autocast wrapper
    unet, te = pipe.unet, pipe.text_encoder
    if config.lora_rank is not None:
        if merge:
            unet.fuse_lora()
        unet.unload_lora()
    if config.gradient_checkpointing:
        unet.disable_gradient_checkpointing()
        if config.train_text_encoder:
            _text_checkpointing(te, False)
    for name, dtype in dtypes.items():
        _to_dtype(getattr(pipe, name), dtype).requires_grad_(False).eval()
