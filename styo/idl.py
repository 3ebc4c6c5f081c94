"""Identifier Disentanglement Learning (IDL): StyO's one-shot fine-tuning (docs/design.md §1).

One UNet (optionally with LoRA, optionally with the text encoder) is fine-tuned on three terms at
once, each with its own image, prompt, noise and timestep:

    L = ||ε - ε_θ(z_src^t, t, γ_src)||² + ||ε - ε_θ(z_tgt^t, t, γ_tgt)||²
        + w_aux ||ε - ε_θ(z_aux^t, t, γ_aux)||²

where γ_src = ``a drawing with [S_src] not [S_tgt] style of [C_src] not [C_tgt] portrait``, γ_tgt
swaps the identifiers, and γ_aux = ``... style of portrait`` for the auxiliary portraits; the paper
weighs the three terms alike (w_aux = 1), DreamBooth weighs its class images' term with a λ. The file
reads top to bottom: the settings, the prompts, one batch, the loss, then :func:`train`, whose
loop is the method's whole training step (draw, loss, backward, optimiser step). What surrounds
it lives apart: preparing the models (precision, LoRA, optimizer: :mod:`styo.finetune`) and the
run folder (checkpoints, resume, progress: :mod:`styo.idl_run`).

The three terms share one UNet call (batch 3·b). Everything fixed is computed once before the loop:
the VAE posteriors of all images (a fresh latent is drawn from each posterior per step, as the base
LDM trains), the token ids, and the prompt embeddings unless the text encoder is trained.

Reproducibility: every random draw of step ``s`` (aux index, timesteps, noise, posterior sample)
comes from ``torch.Generator().manual_seed(f(seed, s))`` on the CPU, so a run resumed from a
checkpoint (trainable weights, optimizer and loss-scaler state; safetensors + JSON, no pickle)
reaches exactly the weights and losses of an uninterrupted run.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image

from . import finetune, idl_run
from .checkpoint import list_checkpoints, write_json
from .data import image_to_tensor
from .idl_run import IDLResult, TrainingInterrupted, run_fingerprint
from .pipeline import image_size
from .profiles import PAPER_SD
from .prompts import (
    Identifiers,
    aux_prompt,
    check_length,
    source_prompt,
    styo_prompt,
    target_aux_prompt,
    target_prompt,
)
from .texture_transfer import painted_portraits

__all__ = ["IDLConfig", "IDLResult", "TrainingInterrupted", "evaluate", "idl_loss",
           "prompts_for", "run_fingerprint", "target_variants", "term_weights", "train"]

_MIXED = ("no", "fp16", "bf16")


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
    at SD scale (fp32 UNet plus Adam moments is about 10 GB per checkpoint). ``aux_weight`` weighs
    the auxiliary term against the other two (the paper's 1; DreamBooth's λ for its class images):
    when the auxiliary portraits are the base model's own (the generated set), a heavier term also
    holds the fine-tuned model nearer the base one. ``augment_target`` trains the target term on
    :func:`target_variants` of the target image, one drawn per step, instead of the image alone (an
    extension, not the paper's method). ``target_aux=n`` adds a fourth term, the target side's
    counterpart of the auxiliary set: the first ``n`` auxiliary portraits painted with the target's
    texture (:func:`styo.texture_transfer.painted_portraits`) under ``a drawing with [S_tgt] not
    [S_src] style of portrait``, weighed like the auxiliary term, so that ``[S_tgt]`` sees its style
    on faces other than the target's (an extension; 0 is the paper's method).
    """

    steps: int = PAPER_SD["steps"]
    lr: float = PAPER_SD["lr"]
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
    aux_weight: float = 1.0
    augment_target: bool = False
    target_aux: int = 0

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
        if not self.aux_weight >= 0 or not math.isfinite(self.aux_weight):
            raise ValueError(f"aux_weight must be a number >= 0 (1: the paper's), got {self.aux_weight!r}")
        if not isinstance(self.target_aux, int) or isinstance(self.target_aux, bool) or self.target_aux < 0:
            raise ValueError(f"target_aux must be an integer >= 0 (0: the paper's method), got {self.target_aux!r}")
        if self.target_aux and not self.use_aux:
            raise ValueError("target_aux paints the auxiliary portraits, so it needs use_aux=True; "
                             "set target_aux=0 for the no-aux ablation")
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


def prompts_for(config: IDLConfig) -> dict[str, str]:
    """The training prompts by term: ``source``, ``target``, (unless no-aux) ``aux`` and (with
    ``target_aux``) ``target_aux``."""
    ids, neg, n_s, n_c = config.ids, config.negative, config.train_n_s, config.train_n_c
    prompts = {
        "source": source_prompt(ids, neg, n_s, n_c),
        "target": target_prompt(ids, neg, n_s, n_c),
    }
    if config.use_aux:
        prompts["aux"] = aux_prompt(ids, neg)
    if config.target_aux:
        prompts["target_aux"] = target_aux_prompt(ids, neg)
    return prompts


def target_variants(image: Image.Image) -> list[Image.Image]:
    """The target image under every permutation of its colour channels, each as drawn and
    mirrored: twelve pictures with the target's strokes, tiles or dots and other colours.

    One picture binds everything in it to the target's identifiers, its colours and its pose as
    much as its texture; trained on all twelve under the one target prompt, no identifier can name
    the target's colours or which way its head tilts, so that what a stylization takes from
    ``[S_tgt]`` is more nearly the style alone (docs/design.md §3 has what it measured on the
    miniature model). The first variant is the image itself.
    """
    pixels = np.asarray(image.convert("RGB"))
    variants = []
    for order in itertools.permutations(range(3)):
        recoloured = pixels[:, :, list(order)]
        variants += [recoloured, recoloured[:, ::-1]]
    return [Image.fromarray(np.ascontiguousarray(v)) for v in variants]


# --- fixed inputs ------------------------------------------------------------------------------


@dataclass
class _Fixed:
    """Tensors computed once: posterior mean/std of [source, *targets, *aux, *painted] and prompt
    inputs (``targets``: the target image, or its :func:`target_variants`; ``painted``: the
    auxiliary portraits painted with the target's texture, when the run has them)."""

    mean: torch.Tensor
    std: torch.Tensor
    ids: torch.Tensor
    embeds: torch.Tensor | None
    n_aux: int
    n_targets: int = 1
    n_painted: int = 0


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


def _training_images(target, aux, config: IDLConfig, progress: bool = False
                     ) -> tuple[list[Image.Image], list[Image.Image]]:
    """The target pictures (the target, or its variants) and the painted portraits a run trains on.

    Made before any model is touched: painting is the slow step and the one that can refuse its
    input, and an error here must leave the caller's pipeline as it was."""
    targets = target_variants(target) if config.augment_target else [target]
    painted = painted_portraits(target, aux, config.target_aux, progress=progress) if config.target_aux else []
    return targets, painted


def _prepare_fixed(pipe, source, targets, aux, painted, prompts, device, embed: bool) -> _Fixed:
    mean, std = _encode_images(pipe.vae, [source, *targets, *aux, *painted], device)
    ids = _tokenize(pipe.tokenizer, list(prompts.values()), device)
    embeds = None
    if embed:
        with torch.no_grad():
            embeds = pipe.text_encoder(ids)[0].float()
    return _Fixed(mean, std, ids, embeds, len(aux), len(targets), len(painted))


# --- one step ---------------------------------------------------------------------------------


def step_generator(seed: int, micro_step: int, process: int = 0) -> torch.Generator:
    """The generator for one micro-step: a pure function of (seed, step, process)."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + micro_step) * 64 + process)


def draw_batch(gen: torch.Generator, fixed: _Fixed, n_terms: int, b: int, num_t: int, device):
    """Image and prompt index per sample, timesteps, noise and posterior sample, from ``gen``.

    With one target image and no painted portraits the draws are those of every run made before
    either existed: the painted portraits' index is drawn right after the auxiliary one, the target
    variant's last, each only when the run has them."""
    first_aux = 1 + fixed.n_targets
    aux_idx = torch.randint(fixed.n_aux, (b,), generator=gen) + first_aux if n_terms >= 3 else None
    painted_idx = (torch.randint(fixed.n_painted, (b,), generator=gen) + first_aux + fixed.n_aux
                   if n_terms == 4 else None)
    shape = (n_terms * b, *fixed.mean.shape[1:])
    t = torch.randint(0, num_t, (n_terms * b,), generator=gen)
    noise = torch.randn(shape, generator=gen)
    eps = torch.randn(shape, generator=gen)
    target_idx = (torch.randint(fixed.n_targets, (b,), generator=gen) + 1 if fixed.n_targets > 1
                  else torch.ones(b, dtype=torch.long))
    image_idx = torch.cat(
        [torch.zeros(b, dtype=torch.long), target_idx]
        + [idx for idx in (aux_idx, painted_idx) if idx is not None]
    )
    prompt_idx = torch.arange(n_terms).repeat_interleave(b)
    z0 = fixed.mean[image_idx.to(device)] + fixed.std[image_idx.to(device)] * eps.to(device)
    return z0, prompt_idx.to(device), t.to(device), noise.to(device)


def idl_loss(unet, scheduler: DDPMScheduler, z0, t, noise, embeds, n_terms: int) -> torch.Tensor:
    """IDL's loss: the noise-prediction MSE of each term (mean over its samples), ``(n_terms,)``.

    ``z0`` holds the clean latents of the source, target and auxiliary samples in that order
    (``n_terms`` blocks), ``embeds`` their prompts' embeddings; one UNet call for all of them.
    """
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


def term_weights(config: IDLConfig, n_terms: int) -> torch.Tensor:
    """The weight of each loss term: 1 for the source and the target, ``aux_weight`` for the
    auxiliary portraits and for the painted ones (when the run has them)."""
    return torch.tensor([1.0, 1.0, config.aux_weight, config.aux_weight][:n_terms])


# --- training ---------------------------------------------------------------------------------


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
    idl_run.check_output_dir(out, resume)
    fingerprint = run_fingerprint(pipe, config, source, target, aux)
    if resume and idl_run.finished(out):
        return idl_run.load_finished(pipe, out, config, fingerprint, prompts)
    targets, painted = _training_images(target, aux, config, progress)

    # The models, made ready to train (fp32 trained weights, LoRA, optimizer, accelerator).
    accelerator = finetune.accelerator_for(config, cpu=pipe.unet.device.type == "cpu")
    device = accelerator.device
    opt_cls, opt_kwargs = finetune.optimizer_class(config, device)
    dtypes = {"unet": pipe.unet.dtype, "text_encoder": pipe.text_encoder.dtype}
    modules = finetune.prepare_modules(pipe, config, device)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay, **opt_kwargs)
    prepared = accelerator.prepare(*modules.values(), optimizer)
    wrapped, optimizer = dict(zip(modules, prepared[:-1], strict=True)), prepared[-1]
    unet, text_encoder = wrapped["unet"], wrapped.get("text_encoder", pipe.text_encoder)
    trained = {n: accelerator.unwrap_model(m) for n, m in wrapped.items()}

    # What never changes: image posteriors, token ids, prompt embeddings (frozen text encoder).
    fixed = _prepare_fixed(pipe, source, targets, aux, painted, prompts, device,
                           embed=not config.train_text_encoder)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    n_terms, accumulate = len(prompts), config.gradient_accumulation_steps
    weights = term_weights(config, n_terms).to(device)

    ckpt_dir = out / "checkpoints"
    start, history = 0, []
    found = list_checkpoints(ckpt_dir) if resume else []
    if found:
        start, history = idl_run.resume_checkpoint(found[-1], trained, optimizer, accelerator,
                                                   fingerprint, config)

    def save(step: int, history: list[list[float]]) -> Path:
        return idl_run.save_run_checkpoint(accelerator, ckpt_dir, step, trained, optimizer, history,
                                           fingerprint, config.keep_checkpoints)

    log = idl_run.RunLog(config, start, history, save,
                         progress and accelerator.is_local_main_process, callback)
    for m in trained.values():
        m.train()
    merge = False
    try:
        with log.running():
            for step in range(start, config.steps):
                micro_losses = []
                for micro in range(step * accumulate, (step + 1) * accumulate):
                    gen = step_generator(config.seed, micro, accelerator.process_index)
                    z0, prompt_idx, t, noise = draw_batch(
                        gen, fixed, n_terms, config.batch_size,
                        scheduler.config.num_train_timesteps, device)
                    with accelerator.accumulate(*wrapped.values()):
                        embeds = fixed.embeds if fixed.embeds is not None else text_encoder(fixed.ids)[0]
                        terms = idl_loss(unet, scheduler, z0, t, noise, embeds[prompt_idx], n_terms)
                        accelerator.backward((terms * weights).sum())
                        if accelerator.sync_gradients and config.max_grad_norm:
                            accelerator.clip_grad_norm_(params, config.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    micro_losses.append(terms.detach())
                log.step_done(step + 1, sum(micro_losses) / accumulate)
        merge = True
    finally:
        finetune.restore_modules(pipe, accelerator, wrapped, config, dtypes, merge)
        accelerator.free_memory()
    history = log.history
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        idl_run.save_pipeline(pipe, out)
        result = idl_run.result(pipe, out, history, prompts, start)
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
    return idl_run.result(pipe, out, history, prompts, start)


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
    painted = painted_portraits(target, aux, config.target_aux) if config.target_aux else []
    fixed = _prepare_fixed(pipe, source, [target], aux, painted, prompts, device, embed=True)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator("cpu").manual_seed(seed)
    sums = torch.zeros(len(prompts))
    prompt_idx = torch.tensor([0, 1] + [2] * len(aux) + [3] * fixed.n_painted, device=device)
    n, aux_end = len(fixed.mean), 2 + len(aux)
    for step_t in timesteps:
        noise = torch.randn(fixed.mean.shape, generator=gen).to(device)
        per = torch.cat([
            idl_loss(
                pipe.unet, scheduler, fixed.mean[i : i + chunk],
                torch.full((min(chunk, n - i),), int(step_t), device=device, dtype=torch.long),
                noise[i : i + chunk], fixed.embeds[prompt_idx[i : i + chunk]], min(chunk, n - i),
            )
            for i in range(0, n, chunk)
        ])
        sums += torch.stack([per[0], per[1]] + ([per[2:aux_end].mean()] if aux else [])
                            + ([per[aux_end:].mean()] if fixed.n_painted else [])).cpu()
    means = (sums / len(timesteps)).tolist()
    out = dict(zip(prompts, means, strict=True))
    out["total"] = float(sum(means))
    return out
