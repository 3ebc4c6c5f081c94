"""Identifier Disentanglement Learning (IDL): StyO's one-shot fine-tuning (docs/design.md §1).

One UNet (optionally with LoRA, optionally with the text encoder) is fine-tuned on three terms at
once, each with its own image, prompt, noise and timestep:

    L = ||ε - ε_θ(z_src^t, t, γ_src)||² + ||ε - ε_θ(z_tgt^t, t, γ_tgt)||²
        + ||ε - ε_θ(z_aux^t, t, γ_aux)||²

The three terms share one UNet call (batch 3·b). Everything fixed is computed once before the loop:
the VAE posteriors of all images (a fresh latent is drawn from each posterior per step, as the base
LDM trains), the token ids, and the prompt embeddings unless the text encoder is trained.

Reproducibility: every random draw of step ``s`` (aux index, timesteps, noise, posterior sample)
comes from ``torch.Generator().manual_seed(f(seed, s))`` on the CPU, so a run resumed from a
checkpoint (trainable weights, optimizer and loss-scaler state; safetensors + JSON, no pickle)
reaches exactly the weights and losses of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file
from tqdm.auto import tqdm

from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, write_json
from .data import image_to_tensor, model_fingerprint
from .pipeline import image_size
from .profiles import PROFILE_FILE
from .prompts import (
    Identifiers,
    aux_prompt,
    check_length,
    source_prompt,
    styo_prompt,
    target_prompt,
)

_MIXED = ("no", "fp16", "bf16")
# Fields that do not change the training trajectory, so a resumed run may change them.
_TRAJECTORY_FREE = {"steps", "checkpoint_every", "keep_checkpoints"}


@dataclass
class IDLConfig:
    """IDL hyper-parameters; the defaults are the paper's settings for SD at 512².

    ``lr=1e-6`` and 400 steps suit Stable Diffusion; the miniature model, trained from scratch,
    barely moves at that rate and needs about ``lr=1e-4`` (docs/design.md §3).
    ``negative=False`` is the positive-only ablation (no ``not [..]`` parts); ``use_aux=False`` the
    no-aux ablation (two loss terms). ``train_n_s``/``train_n_c`` repeat the style/content phrases
    of the *source and target* training prompts (the training-time reading of the augmented
    prompt); the auxiliary prompt stays plain. ``batch_size`` is the number of noise samples per
    term (the aux term draws that many aux images). ``checkpoint_every=0`` disables periodic
    checkpoints (an interrupt still writes one); ``keep_checkpoints`` bounds disk use, which matters
    at SD scale (fp32 UNet plus Adam moments is about 10 GB per checkpoint).
    """

    steps: int = 400
    lr: float = 1e-6
    batch_size: int = 1
    seed: int = 0
    ids: Identifiers = field(default_factory=Identifiers)
    negative: bool = True
    use_aux: bool = True
    train_text_encoder: bool = False
    lora_rank: int | None = None
    mixed_precision: str = "no"
    use_8bit_adam: bool = False
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    checkpoint_every: int = 100
    keep_checkpoints: int = 1
    train_n_s: int = 1
    train_n_c: int = 1
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "keep_checkpoints": self.keep_checkpoints,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.checkpoint_every < 0:
            raise ValueError(
                f"checkpoint_every must be >= 0 (0: only on interrupt), got {self.checkpoint_every}"
            )
        if self.mixed_precision not in _MIXED:
            raise ValueError(
                f"mixed_precision must be one of {_MIXED}, got {self.mixed_precision!r}"
            )
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(
                f"lora_rank must be None (full fine-tuning) or >= 1, got {self.lora_rank}"
            )
        if self.lora_rank is not None and self.train_text_encoder:
            raise ValueError(
                "LoRA trains the UNet only; do not combine lora_rank with train_text_encoder"
            )
        styo_prompt("s", "c", self.train_n_s, self.train_n_c)  # validates the repeat counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IDLResult:
    """What a run produced; ``pipeline`` is the caller's pipeline, fine-tuned in place."""

    losses: list[float]
    term_losses: dict[str, list[float]]
    pipeline: StableDiffusionPipeline
    output_dir: Path
    pipeline_dir: Path
    losses_path: Path
    checkpoint_dir: Path
    prompts: dict[str, str]
    resumed_from: int = 0


def prompts_for(config: IDLConfig) -> dict[str, str]:
    """The training prompts by term: ``source``, ``target`` and (unless no-aux) ``aux``."""
    ids, neg, n_s, n_c = config.ids, config.negative, config.train_n_s, config.train_n_c
    prompts = {
        "source": source_prompt(ids, neg, n_s, n_c),
        "target": target_prompt(ids, neg, n_s, n_c),
    }
    if config.use_aux:
        prompts["aux"] = aux_prompt(ids, neg)
    return prompts


# --- fixed inputs ------------------------------------------------------------------------------


@dataclass
class _Fixed:
    """Tensors computed once: posterior mean/std of [source, target, *aux] and prompt inputs."""

    mean: torch.Tensor
    std: torch.Tensor
    ids: torch.Tensor
    embeds: torch.Tensor | None
    n_aux: int


def _check_images(pipe, images: dict[str, list[Image.Image]]) -> None:
    size = image_size(pipe)
    for role, imgs in images.items():
        for i, img in enumerate(imgs):
            if not isinstance(img, Image.Image) or img.size != (size, size):
                got = img.size if isinstance(img, Image.Image) else type(img).__name__
                raise ValueError(
                    f"{role} image {i} is {got}, but this model needs {size}x{size} PIL images; "
                    f"load them with styo.data.load_image(path, {size})"
                )


@torch.no_grad()
def _encode_images(vae, images: list[Image.Image], device, chunk: int = 8):
    """Scaled posterior mean and std of each image (chunked: 200 aux images at 512² are heavy)."""
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    means, stds = [], []
    for start in range(0, len(images), chunk):
        x = torch.stack([image_to_tensor(im) for im in images[start : start + chunk]])
        dist = vae.encode(x.to(device, vae.dtype)).latent_dist
        means.append((dist.mean.float() - shift) * scale)
        stds.append(dist.std.float() * scale)
    return torch.cat(means), torch.cat(stds)


def _tokenize(tokenizer, prompts: list[str], device) -> torch.Tensor:
    for p in prompts:
        check_length(tokenizer, p)
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids.to(device)


def _prepare_fixed(pipe, source, target, aux, prompts, device, embed: bool) -> _Fixed:
    mean, std = _encode_images(pipe.vae, [source, target, *aux], device)
    ids = _tokenize(pipe.tokenizer, list(prompts.values()), device)
    embeds = None
    if embed:
        with torch.no_grad():
            embeds = pipe.text_encoder(ids)[0].float()
    return _Fixed(mean, std, ids, embeds, len(aux))


# --- one step ---------------------------------------------------------------------------------


def step_generator(seed: int, micro_step: int, process: int = 0) -> torch.Generator:
    """The generator for one micro-step: a pure function of (seed, step, process)."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + micro_step) * 64 + process)


def _draw(gen: torch.Generator, fixed: _Fixed, n_terms: int, b: int, num_t: int, device):
    """Image and prompt index per sample, timesteps, noise and posterior sample, from ``gen``."""
    aux_idx = torch.randint(fixed.n_aux, (b,), generator=gen) + 2 if n_terms == 3 else None
    image_idx = torch.cat(
        [torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.long)]
        + ([aux_idx] if aux_idx is not None else [])
    )
    prompt_idx = torch.arange(n_terms).repeat_interleave(b)
    shape = (n_terms * b, *fixed.mean.shape[1:])
    t = torch.randint(0, num_t, (n_terms * b,), generator=gen)
    noise = torch.randn(shape, generator=gen)
    eps = torch.randn(shape, generator=gen)
    z0 = fixed.mean[image_idx.to(device)] + fixed.std[image_idx.to(device)] * eps.to(device)
    return z0, prompt_idx.to(device), t.to(device), noise.to(device)


def term_losses(unet, scheduler: DDPMScheduler, z0, t, noise, embeds, n_terms: int) -> torch.Tensor:
    """MSE noise-prediction loss per term (mean over its samples), shape ``(n_terms,)``."""
    noisy = scheduler.add_noise(z0, noise, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(z0, noise, t)
    else:
        raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")
    dtype = next(unet.parameters()).dtype
    pred = unet(noisy.to(dtype), t, encoder_hidden_states=embeds.to(dtype), return_dict=False)[0]
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return per_sample.view(n_terms, -1).mean(dim=1)


def _embeddings(fixed: _Fixed, text_encoder, prompt_idx: torch.Tensor) -> torch.Tensor:
    embeds = fixed.embeds if fixed.embeds is not None else text_encoder(fixed.ids)[0]
    return embeds[prompt_idx]


@torch.no_grad()
def evaluate(
    pipe,
    source: Image.Image,
    target: Image.Image,
    aux: list[Image.Image],
    config: IDLConfig | None = None,
    *,
    seed: int = 1234,
    timesteps: tuple[int, ...] = (50, 250, 500, 750, 950),
    chunk: int = 8,
) -> dict[str, float]:
    """Deterministic IDL loss per term (and ``total``) with fixed noise and fixed timesteps.

    The running training loss is too noisy to tell progress (random t and noise each step); this
    uses posterior means, the same noise for every call, every aux image, and the given timesteps.
    The UNet sees ``chunk`` images per call (202 SD images at once would not fit a 15 GB GPU);
    the result does not depend on ``chunk``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    config = config or IDLConfig()
    aux = list(aux) if config.use_aux else []
    prompts = prompts_for(config)
    device = pipe.unet.device
    fixed = _prepare_fixed(pipe, source, target, aux, prompts, device, embed=True)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator("cpu").manual_seed(seed)
    sums = torch.zeros(len(prompts))
    prompt_idx = torch.tensor([0, 1] + [2] * len(aux), device=device)
    n = len(fixed.mean)
    for step_t in timesteps:
        noise = torch.randn(fixed.mean.shape, generator=gen).to(device)
        per = torch.cat([
            term_losses(
                pipe.unet, scheduler, fixed.mean[i : i + chunk],
                torch.full((min(chunk, n - i),), int(step_t), device=device, dtype=torch.long),
                noise[i : i + chunk], fixed.embeds[prompt_idx[i : i + chunk]], min(chunk, n - i),
            )
            for i in range(0, n, chunk)
        ])
        sums += torch.stack([per[0], per[1]] + ([per[2:].mean()] if aux else [])).cpu()
    means = (sums / len(timesteps)).tolist()
    out = dict(zip(prompts, means, strict=True))
    out["total"] = float(sum(means))
    return out


# --- the run folder -----------------------------------------------------------------------------


def _image_digest(images: list[Image.Image]) -> str:
    h = hashlib.sha256()
    for img in images:
        h.update(np.asarray(img.convert("RGB")).tobytes())
    return h.hexdigest()


def _frozen_modules(config: IDLConfig) -> tuple[str, ...]:
    """Modules whose weights a checkpoint does not hold, so a resume must get the same ones."""
    frozen = ["vae"] + ([] if config.train_text_encoder else ["text_encoder"])
    return tuple(frozen + (["unet"] if config.lora_rank is not None else []))


def run_fingerprint(pipe, config: IDLConfig, source, target, aux) -> dict[str, Any]:
    """Everything that shapes the trajectory; a resume with a different one is refused."""
    trajectory = {k: v for k, v in config.to_dict().items() if k not in _TRAJECTORY_FREE}
    return {
        "config": trajectory,
        "model": model_fingerprint(pipe, _frozen_modules(config)),
        "images": {
            "source": _image_digest([source]),
            "target": _image_digest([target]),
            "aux": _image_digest(aux),
        },
    }


def _check_same_run(found: dict[str, Any], wanted: dict[str, Any], where: Path) -> None:
    diff = [k for k in wanted if found.get(k) != wanted[k]]
    if "config" in diff:
        keys = sorted(k for k in wanted["config"] if found["config"].get(k) != wanted["config"][k])
        diff = [d for d in diff if d != "config"] + [f"config.{k}" for k in keys]
    if diff:
        raise ValueError(
            f"{where} was written by a different run ({', '.join(diff)} differ); resuming it would "
            "not give the same result. Use the original settings, or another output folder."
        )


def _finished(out: Path) -> bool:
    return (out / "losses.json").is_file() and (out / "pipeline" / "model_index.json").is_file()


def _check_output_dir(out: Path, resume: bool) -> None:
    """Refuse to mix a new run into a folder that holds one, unless asked to resume it."""
    if resume:
        return
    if _finished(out):
        raise FileExistsError(
            f"{out} already holds a finished IDL run; pass resume=True (--resume) to reuse it, "
            "or choose another output folder"
        )
    found = list_checkpoints(out / "checkpoints")
    if found:
        raise FileExistsError(
            f"{out} holds an unfinished IDL run (checkpoint {found[-1].name}); pass resume=True "
            "(--resume) to continue it, or choose another output folder"
        )


def _result(pipe, out: Path, history: list[list[float]], prompts, start: int) -> IDLResult:
    terms = {name: [row[i + 1] for row in history] for i, name in enumerate(prompts)}
    return IDLResult(
        losses=[row[0] for row in history],
        term_losses=terms,
        pipeline=pipe,
        output_dir=out,
        pipeline_dir=out / "pipeline",
        losses_path=out / "losses.json",
        checkpoint_dir=out / "checkpoints",
        prompts=dict(prompts),
        resumed_from=start,
    )


def _load_finished(pipe, out: Path, config: IDLConfig, fingerprint, prompts) -> IDLResult:
    """Resume of a finished run: put its fine-tuned weights into ``pipe`` and report it."""
    record = json.loads((out / "losses.json").read_text())
    _check_same_run(record["fingerprint"], fingerprint, out)
    if len(record["losses"]) != config.steps:
        raise ValueError(
            f"{out} holds a finished run of {len(record['losses'])} steps, not {config.steps}; "
            "choose another output folder to train a different number of steps"
        )
    for name in ("unet", "text_encoder"):
        module = getattr(pipe, name)
        saved = type(module).from_pretrained(out / "pipeline", subfolder=name, use_safetensors=True)
        module.load_state_dict(saved.state_dict())
    rows = [
        [record["losses"][i]] + [record["terms"][k][i] for k in prompts]
        for i in range(len(record["losses"]))
    ]
    return _result(pipe, out, rows, prompts, start=len(rows))


# --- training machinery -------------------------------------------------------------------------


def _accelerator(config: IDLConfig, cpu: bool):
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


def _optimizer_class(config: IDLConfig, device: torch.device):
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


def _add_lora(unet, rank: int, seed: int) -> None:
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


def _setup_modules(pipe, config: IDLConfig, device) -> dict[str, torch.nn.Module]:
    """Freeze, add LoRA, upcast what is trained to fp32; return the trained modules by name.

    Trainable weights must be fp32 (Adam updates of 1e-6 vanish in fp16). Frozen weights keep the
    pipeline's dtype when autocast runs the maths, else become fp32 too.
    """
    unet, te = pipe.unet, pipe.text_encoder
    pipe.vae.requires_grad_(False)
    te.requires_grad_(config.train_text_encoder)
    unet.requires_grad_(config.lora_rank is None)
    if config.lora_rank is not None:
        _add_lora(unet, config.lora_rank, config.seed)
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


def _trainable(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Trainable tensors by qualified name; detached views share storage (for saving/loading)."""
    return {
        f"{m}.{n}": p.detach()
        for m, mod in modules.items()
        for n, p in mod.named_parameters()
        if p.requires_grad
    }


def _finish_modules(pipe, accelerator, wrapped, config: IDLConfig, dtypes, merge: bool) -> None:
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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training after a step; a checkpoint holds everything so far."""


@contextmanager
def _deferred_interrupts() -> Iterator[dict[str, int | None]]:
    """Turn the first SIGINT/SIGTERM into a flag checked between steps (so the checkpoint is a
    consistent state); a second signal interrupts at once. Only in the main thread."""
    flag: dict[str, int | None] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signal"] is not None:
            raise KeyboardInterrupt
        flag["signal"] = signum
        tqdm.write("stopping after this step and saving a checkpoint (press Ctrl-C again to abort)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _save_pipeline(pipe, out: Path) -> None:
    """Save the whole pipeline (safetensors) atomically: a folder appears complete or not at all.

    The profile file of the folder the pipeline was loaded from goes along, so the fine-tuned
    model keeps its base model's settings (:func:`styo.profiles.profile_of`).
    """
    final, tmp = out / "pipeline", out / ".pipeline.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    origin = Path(str(getattr(pipe, "name_or_path", "") or "")) / PROFILE_FILE
    if origin.is_file():
        shutil.copyfile(origin, tmp / PROFILE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


# --- the loop -----------------------------------------------------------------------------------


def train(
    pipe: StableDiffusionPipeline,
    source: Image.Image,
    target: Image.Image,
    aux: list[Image.Image],
    config: IDLConfig | None = None,
    *,
    output_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> IDLResult:
    """Fine-tune ``pipe`` in place with IDL and save it to ``output_dir/pipeline``.

    ``output_dir`` gets ``checkpoints/step-XXXXXX/`` every ``config.checkpoint_every`` steps (and on
    Ctrl-C / SIGTERM), then ``pipeline/`` and ``losses.json`` when done. A folder holding a run is
    refused unless ``resume=True``, which continues from the newest checkpoint (or, for a finished
    run with the same settings, just loads its weights). ``callback(step, loss)`` runs after each
    step (it forces a device sync). Input images are never written to.
    """
    config = config or IDLConfig()
    out = Path(output_dir)
    aux = list(aux) if config.use_aux else []
    if config.use_aux and not aux:
        raise ValueError("the auxiliary set is empty; pass aux images or set use_aux=False")
    _check_images(pipe, {"source": [source], "target": [target], "aux": aux})
    prompts = prompts_for(config)
    for p in prompts.values():
        check_length(pipe.tokenizer, p)
    _check_output_dir(out, resume)
    fingerprint = run_fingerprint(pipe, config, source, target, aux)
    if resume and _finished(out):
        return _load_finished(pipe, out, config, fingerprint, prompts)

    accelerator = _accelerator(config, cpu=pipe.unet.device.type == "cpu")
    opt_cls, opt_kwargs = _optimizer_class(config, accelerator.device)
    dtypes = {"unet": pipe.unet.dtype, "text_encoder": pipe.text_encoder.dtype}
    modules = _setup_modules(pipe, config, accelerator.device)
    fixed = _prepare_fixed(
        pipe, source, target, aux, prompts, accelerator.device, embed=not config.train_text_encoder
    )
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay, **opt_kwargs)
    prepared = accelerator.prepare(*modules.values(), optimizer)
    wrapped, optimizer = dict(zip(modules, prepared[:-1], strict=True)), prepared[-1]

    ckpt_dir = out / "checkpoints"
    history: list[list[float]] = []
    start = 0
    found = list_checkpoints(ckpt_dir) if resume else []
    if found:
        start, history = _resume(found[-1], modules, optimizer, accelerator, fingerprint, config)

    loop = _Loop(pipe, config, accelerator, wrapped, optimizer, params, fixed, prompts)
    merge = False
    try:
        history = loop.run(start, history, ckpt_dir, fingerprint, progress, callback)
        merge = True
    finally:
        _finish_modules(pipe, accelerator, wrapped, config, dtypes, merge)
        accelerator.free_memory()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _save_pipeline(pipe, out)
        result = _result(pipe, out, history, prompts, start)
        write_json(
            out / "losses.json",
            {
                "losses": result.losses,
                "terms": result.term_losses,
                "prompts": prompts,
                "config": config.to_dict(),
                "fingerprint": fingerprint,
                "resumed_from": start,
            },
        )
    accelerator.wait_for_everyone()
    return _result(pipe, out, history, prompts, start)


def _resume(path: Path, modules, optimizer, accelerator, fingerprint, config) -> tuple[int, list]:
    """Load trainable weights, optimizer and loss-scaler state from a checkpoint (no pickle)."""
    meta = json.loads((path / "state.json").read_text())
    _check_same_run(meta["extra"]["fingerprint"], fingerprint, path)
    step = int(meta["step"])
    if step > config.steps:
        raise ValueError(f"{path} is past the requested {config.steps} steps; use a new folder")
    trainable = _trainable(modules)
    saved = load_file(path / "trainable.safetensors")
    if set(saved) != set(trainable):
        raise ValueError(
            f"{path} holds different trainable tensors than this run; use a new folder"
        )
    load_checkpoint(path, {"trainable": trainable}, optimizer)
    scaler = meta["extra"].get("scaler")
    if scaler and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(scaler)
    return step, meta["extra"]["losses"]


class _Loop:
    """The optimisation loop; a class only to keep ``train`` readable (state shared by methods)."""

    def __init__(self, pipe, config, accelerator, wrapped, optimizer, params, fixed, prompts):
        self.config, self.acc, self.wrapped = config, accelerator, wrapped
        self.optimizer, self.params, self.fixed = optimizer, params, fixed
        self.unet = wrapped["unet"]
        self.text_encoder = wrapped.get("text_encoder", pipe.text_encoder)
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.n_terms = len(prompts)
        self.modules = {n: accelerator.unwrap_model(m) for n, m in wrapped.items()}

    def micro_step(self, micro: int) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns the detached per-term losses."""
        cfg = self.config
        gen = step_generator(cfg.seed, micro, self.acc.process_index)
        z0, prompt_idx, t, noise = _draw(
            gen,
            self.fixed,
            self.n_terms,
            cfg.batch_size,
            self.scheduler.config.num_train_timesteps,
            self.acc.device,
        )
        with self.acc.accumulate(*self.wrapped.values()):
            embeds = _embeddings(self.fixed, self.text_encoder, prompt_idx)
            terms = term_losses(self.unet, self.scheduler, z0, t, noise, embeds, self.n_terms)
            self.acc.backward(terms.sum())
            if self.acc.sync_gradients and cfg.max_grad_norm:
                self.acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return terms.detach()

    def run(self, start, history, ckpt_dir, fingerprint, progress, callback) -> list[list[float]]:
        cfg, k = self.config, self.config.gradient_accumulation_steps
        pending: list[torch.Tensor] = []

        def flush() -> None:  # one device sync for many steps
            if pending:
                rows = torch.stack(pending).float().cpu()
                history.extend([[float(r.sum())] + r.tolist() for r in rows])
                pending.clear()

        for m in self.modules.values():
            m.train()
        bar = tqdm(
            total=cfg.steps,
            initial=start,
            desc="IDL",
            disable=not progress or not self.acc.is_local_main_process,
            dynamic_ncols=True,
        )
        with _deferred_interrupts() as stop, bar:
            for step in range(start, cfg.steps):
                terms = sum(self.micro_step(step * k + j) for j in range(k)) / k
                pending.append(terms)
                done = step + 1
                bar.update(1)
                if callback is not None or done % 10 == 0 or done == cfg.steps:
                    flush()
                    recent = [row[0] for row in history[-10:]]
                    bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
                periodic = cfg.checkpoint_every and done % cfg.checkpoint_every == 0
                if periodic or stop["signal"] is not None:
                    flush()
                    path = self.save(ckpt_dir, done, history, fingerprint)
                if stop["signal"] is not None:
                    raise TrainingInterrupted(
                        f"IDL stopped at step {done} of {cfg.steps}; checkpoint saved in {path}. "
                        "Run again with resume=True (--resume) to finish."
                    )
                if callback is not None:
                    callback(done, history[-1][0])
        flush()
        return history

    def save(self, ckpt_dir: Path, step: int, history, fingerprint) -> Path:
        """Checkpoint: trainable tensors + optimizer tensors (safetensors), scalars in JSON."""
        self.acc.wait_for_everyone()
        path = ckpt_dir / f"step-{step:06d}"
        if self.acc.is_main_process:
            scaler = self.acc.scaler.state_dict() if self.acc.scaler is not None else None
            extra = {"fingerprint": fingerprint, "losses": history, "scaler": scaler}
            path = save_checkpoint(
                ckpt_dir,
                step,
                {"trainable": _trainable(self.modules)},
                self.optimizer,
                extra=extra,
                keep=self.config.keep_checkpoints,
            )
        self.acc.wait_for_everyone()
        return path
