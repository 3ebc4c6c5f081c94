"""SD-1.5-scale benchmark of StyO: IDL step time / memory per profile, FCC generation overhead.

The Stable Diffusion v1.5 architecture is built with random weights (nothing is downloaded: the
configs below are SD-1.5's, written out as data). Weights do not matter for speed or memory, so
the figures are those of real SD-1.5 at batch 3 (source, target, one auxiliary image) at 512².

    python benchmarks/sd_scale.py                          # SD-1.5 scale, CUDA when present
    python benchmarks/sd_scale.py --scale smoke --device cpu   # reduced model, 64², < 1 min on CPU
    python benchmarks/sd_scale.py --scale mini --device cpu    # the shipped miniature model: FCC only

Results go to ``<out-dir>/<device>-<scale>.json`` and ``.md`` (see benchmarks/README.md). The
SD-scale targets (400 IDL steps <= 30 s on one H100, a profile <= 14 GiB, FCC overhead <= 1.05x)
are judged only at SD-1.5 scale; a smoke run says so and marks them n/a. The miniature model
(``--scale mini``, the book's default world, on CPU) has its own FCC target, <= 1.10x: there the
explicit maps compete with a fused CPU kernel on a small model, so a looser bound is fair.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.metadata as _md
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

# diffusers, transformers and styo are imported inside functions, after main() has set
# HF_HUB_OFFLINE, so importing this module (as the tests do) changes no environment.
_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # never reach the network: every model is built from a config
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}

# --- model configs (data) -------------------------------------------------------------------------
# SD 1.5's own configs live in styo.sd15_shaped (a module that imports no torch or diffusers at
# import time, so the offline environment above is still set first).
from styo.book.results import run_markdown  # noqa: E402  (torch-free, as the appendix reads it)
from styo.sd15_shaped import SD15_SCHEDULER, SD15_TEXT, SD15_UNET, SD15_VAE  # noqa: E402

# A reduced SD: same block types, levels, cross-attention layout and scheduler; narrow and shallow,
# at 64² images (8² latents). Only proves that the script runs end to end; its numbers mean little.
SMOKE_UNET: dict[str, Any] = {
    **SD15_UNET,
    "sample_size": 8,
    "block_out_channels": (32, 64, 64, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 64,
}
SMOKE_VAE: dict[str, Any] = {
    **SD15_VAE,
    "block_out_channels": (16, 32, 32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}
SMOKE_TEXT: dict[str, Any] = {
    **SD15_TEXT,
    "vocab_size": 1024,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 64,
}

SCALES: dict[str, dict[str, Any]] = {
    "sd15": {"unet": SD15_UNET, "vae": SD15_VAE, "text": SD15_TEXT, "image_size": 512},
    "smoke": {"unet": SMOKE_UNET, "vae": SMOKE_VAE, "text": SMOKE_TEXT, "image_size": 64},
    "mini": {"model": "models/styo-mini", "image_size": 64},  # trained weights; FCC timing only
}

# Parameter counts of SD-1.5's published weights (the configs above must reproduce them).
SD15_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}

# --- IDL profiles ----------------------------------------------------------------------------------
# ``pipeline_dtype``: the dtype the pipeline is loaded in (frozen VAE / text encoder stay in it;
# full fine-tuning keeps fp32 master weights of the UNet, LoRA keeps the UNet in this dtype).
# ``idl``: IDLConfig overrides. Every profile runs batch 3 and checkpoint_every=0.

PROFILES: dict[str, dict[str, Any]] = {
    "fp32-adamw": {
        "pipeline_dtype": "fp32",
        "idl": {"mixed_precision": "no"},
        "about": "fp32 everywhere, AdamW (fused on CUDA): the paper's plain setting",
    },
    "bf16": {
        "pipeline_dtype": "bf16",
        "idl": {"mixed_precision": "bf16"},
        "about": "bf16 autocast, fp32 master weights, fused AdamW",
    },
    "fp16": {
        "pipeline_dtype": "fp16",
        "idl": {"mixed_precision": "fp16"},
        "about": "fp16 autocast + loss scaling, fp32 master weights, fused AdamW",
    },
    "bf16-8bit-adam": {
        "pipeline_dtype": "bf16",
        "idl": {"mixed_precision": "bf16", "use_8bit_adam": True},
        "about": "bf16 with bitsandbytes' 8-bit AdamW (optimizer state 4x smaller)",
    },
    "bf16-lora": {
        "pipeline_dtype": "bf16",
        "idl": {"mixed_precision": "bf16", "lora_rank": 4},
        "about": "bf16 UNet frozen, LoRA rank 4 on to_q/k/v/out trained",
    },
    "bf16-text-encoder": {
        "pipeline_dtype": "bf16",
        "idl": {"mixed_precision": "bf16", "train_text_encoder": True},
        "about": "bf16, UNet and CLIP text encoder both fine-tuned",
    },
    "fp16-gradckpt-8bit": {
        "pipeline_dtype": "fp16",
        "idl": {"mixed_precision": "fp16", "gradient_checkpointing": True, "use_8bit_adam": True},
        "about": "free-Colab-T4 full fine-tune: fp16, gradient checkpointing, 8-bit AdamW",
    },
    "fp16-lora-gradckpt": {
        "pipeline_dtype": "fp16",
        "idl": {"mixed_precision": "fp16", "lora_rank": 4, "gradient_checkpointing": True},
        "about": "free-Colab-T4 LoRA: fp16 UNet, LoRA rank 4, gradient checkpointing",
    },
}

TARGETS = {
    "idl_400_steps_s": 30.0,  # fastest profile, one H100
    "peak_memory_gib": 14.0,  # some profile (a free Colab T4)
    "fcc_ratio": 1.05,  # FCC on / off, whole generation
    "fcc_ratio_mini": 1.10,  # the same on the miniature model, on CPU
}

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GIB = 1024**3


# --- building the pipeline -------------------------------------------------------------------------


def _quiet() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def build_modules(scale: str, tokenizer=None) -> dict[str, torch.nn.Module]:
    """UNet, VAE and text encoder of ``scale`` with random weights, on the current default device.

    Build under ``with torch.device("meta"):`` to count parameters without allocating, or under
    ``with torch.device("cuda"):`` to initialise on the GPU.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = SCALES[scale]
    text = dict(cfg["text"])
    if tokenizer is not None:
        text.update(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return {
        "unet": UNet2DConditionModel(**cfg["unet"]),
        "vae": AutoencoderKL(**cfg["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**text)),
    }


def param_counts(scale: str) -> dict[str, int]:
    """Parameters per module, counted on the meta device (instant, no memory)."""
    if "model" in SCALES[scale]:
        pipe = build_pipeline(scale, torch.device("cpu"), torch.float32)
        return {n: sum(p.numel() for p in getattr(pipe, n).parameters())
                for n in ("unet", "vae", "text_encoder")}
    with torch.device("meta"):
        modules = build_modules(scale)
    return {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}


def build_pipeline(scale: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A StableDiffusionPipeline of ``scale`` with random weights (deterministic in ``seed``), or
    the trained model of a scale that names one."""
    from diffusers import PNDMScheduler

    if "model" in SCALES[scale]:
        from styo.pipeline import load_pipeline

        root = Path(__file__).resolve().parent.parent
        pipe = load_pipeline(str(root / SCALES[scale]["model"]), device=str(device), dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    from styo.pipeline import assemble_pipeline
    from styo.testing import TINY_WORDS
    from styo.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(TINY_WORDS, model_max_length=77)
    if len(tokenizer) > SCALES[scale]["text"]["vocab_size"]:
        raise ValueError("the offline tokenizer outgrew the text encoder's vocabulary")
    torch.manual_seed(seed)
    with torch.device(device):  # initialise where the model will run (fast on a GPU)
        modules = build_modules(scale, tokenizer)
    for m in modules.values():
        m.to(dtype).eval().requires_grad_(False)
    pipe = assemble_pipeline(
        modules["vae"], modules["text_encoder"], tokenizer, modules["unet"],
        PNDMScheduler.from_config(SD15_SCHEDULER),  # keeps clip_sample for DDIM
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_images(size: int, n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


# --- measuring -----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> bool:
    """Reset the peak-memory counter: CUDA allocator stats, or the process's peak RSS (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # "5" resets VmHWM (the peak resident set size) since Linux 4.0
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak(device: torch.device, resettable: bool) -> dict[str, float | None]:
    if device.type == "cuda":
        return {
            "peak_gpu_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
            "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
        }
    rss = None
    if resettable:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        rss = int(m.group(1)) * 1024 / GIB if m else None
    return {"peak_rss_gib": rss}


def _skip_reason(profile: dict[str, Any], device: torch.device) -> str | None:
    if profile["idl"].get("use_8bit_adam"):
        if importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed (pip install bitsandbytes)"
        if device.type != "cuda":
            return "8-bit Adam (bitsandbytes) needs a CUDA GPU"
    if device.type == "cuda" and profile["pipeline_dtype"] == "bf16":
        if not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name(device)} has no bf16 support"
    return None


def bench_idl(args, name: str, device: torch.device) -> dict[str, Any]:
    """One IDL profile: warm-up steps, then ``args.idl_steps`` timed steps (median reported)."""
    from styo.idl import IDLConfig, train

    profile = PROFILES[name]
    out: dict[str, Any] = {
        "about": profile["about"],
        "pipeline_dtype": profile["pipeline_dtype"],
        "idl_config": dict(profile["idl"]),
    }
    reason = _skip_reason(profile, device)
    if reason:
        return {**out, "status": "skipped", "reason": reason}
    size = SCALES[args.scale]["image_size"]
    source, target, *aux = random_images(size, 2 + args.aux_images, args.seed)
    total = args.idl_warmup + args.idl_steps
    config = IDLConfig(steps=total, checkpoint_every=0, seed=args.seed, **profile["idl"])
    stamps: dict[int, float] = {}
    mem_at_last: dict[str, float | None] = {}

    def on_step(step: int, loss: float) -> None:
        # train() already synced to read the loss; this is a no-op guard on CUDA.
        _sync(device)
        stamps[step] = time.perf_counter()
        if step == total:
            mem_at_last.update(_peak(device, resettable))

    pipe = None
    try:
        _free(device)
        pipe = build_pipeline(args.scale, device, _DTYPES[profile["pipeline_dtype"]], args.seed)
        _free(device)
        resettable = _reset_peak(device)
        if device.type == "cuda":  # the pipeline's weights, resident before training starts
            out["gpu_allocated_at_start_gib"] = torch.cuda.memory_allocated(device) / GIB
        with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
            _sync(device)
            start = time.perf_counter()
            result = train(
                pipe, source, target, aux, config, output_dir=tmp, progress=False, callback=on_step
            )
            _sync(device)
            end = time.perf_counter()
    except torch.cuda.OutOfMemoryError as e:
        del pipe
        _free(device)
        return {**out, "status": "oom", "reason": str(e).splitlines()[0]}
    overall = _peak(device, resettable)
    losses_finite = all(np.isfinite(result.losses))
    del pipe, result
    _free(device)
    times = [stamps[s] - stamps[s - 1] for s in range(args.idl_warmup + 1, total + 1)]
    median = statistics.median(times)
    first = stamps[1] - start  # set-up (latents, embeddings, accelerate) + the first step
    finish = end - stamps[total]  # merge/restore + saving the pipeline folder (safetensors)
    return {
        **out,
        "status": "ok",
        "warmup_steps": args.idl_warmup,
        "timed_steps": args.idl_steps,
        "step_time_median_s": median,
        "step_time_mean_s": statistics.fmean(times),
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "step_times_s": times,
        "projected_400_steps_s": 400 * median,
        "setup_and_first_step_s": first,
        "finish_and_save_s": finish,
        "projected_400_steps_end_to_end_s": first + 399 * median + finish,
        "train_call_s": end - start,
        "losses_finite": losses_finite,
        **{f"{k}_during_training": v for k, v in mem_at_last.items()},
        **overall,
    }


FCC_VARIANTS = {
    "off": {"fcc": False},  # default processors (fused SDPA everywhere), nothing installed
    "idle": {"fcc": True, "control_steps": (0.0, 0.0)},  # FCC processors installed, never control
    "on": {"fcc": True},  # FCC on every step (the default)
}


def bench_fcc(args, device: torch.device) -> dict[str, Any]:
    """Time one stylization (both branches, CFG) per variant: one warm-up each, then interleaved
    repeats (off, idle, on, off, ...) so drift on a shared machine hits every variant alike."""
    from styo.fcc import stylize

    dtype = _DTYPES[args.fcc_dtype]
    _free(device)
    pipe = build_pipeline(args.scale, device, dtype, args.seed)
    size = SCALES[args.scale]["image_size"]
    source = random_images(size, 1, args.seed + 7)[0]
    common = dict(
        num_inference_steps=args.fcc_steps,
        strength=args.strength,
        guidance_scale=args.guidance,
        n_s=3,
        n_c=1,
        seed=args.seed,
    )
    times: dict[str, list[float]] = {v: [] for v in FCC_VARIANTS}
    peaks: dict[str, float | None] = {v: None for v in FCC_VARIANTS}
    run_steps = None

    def once(pipe, variant: str) -> float:
        nonlocal run_steps
        resettable = _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        res = stylize(pipe, source, **common, **FCC_VARIANTS[variant])
        _sync(device)
        dt = time.perf_counter() - t0
        run_steps = len(res.timesteps)
        peak = next(iter(_peak(device, resettable).values()))
        if peak is not None:
            peaks[variant] = max(peaks[variant] or 0.0, peak)
        return dt

    for variant in FCC_VARIANTS:  # warm-up (kernel selection, allocator, lazy init)
        once(pipe, variant)
    for _ in range(args.fcc_repeats):
        for variant in FCC_VARIANTS:
            times[variant].append(once(pipe, variant))
    del pipe
    _free(device)
    med = {v: statistics.median(t) for v, t in times.items()}
    mem_key = "peak_gpu_allocated_gib" if device.type == "cuda" else "peak_rss_gib"
    return {
        "dtype": args.fcc_dtype,
        "num_inference_steps": args.fcc_steps,
        "denoising_steps_run": run_steps,
        "strength": args.strength,
        "guidance_scale": args.guidance,
        "n_s": 3,
        "n_c": 1,
        "unet_batch": 4,
        "repeats": args.fcc_repeats,
        "variants": {
            v: {
                "settings": {k: list(x) if isinstance(x, tuple) else x for k, x in kw.items()},
                "median_s": med[v],
                "times_s": times[v],
                mem_key: peaks[v],
            }
            for v, kw in FCC_VARIANTS.items()
        },
        "ratio_on_off": med["on"] / med["off"],
        "ratio_idle_off": med["idle"] / med["off"],
    }


# --- report ----------------------------------------------------------------------------------------


def device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "type": "cuda",
            "name": props.name,
            "memory_gib": props.total_memory / GIB,
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        }
    name = platform.processor() or platform.machine()
    try:
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        name = m.group(1).strip() if m else name
    except OSError:
        pass
    return {
        "type": "cpu",
        "name": name,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def _version(pkg: str) -> str | None:
    try:
        return _md.version(pkg)
    except _md.PackageNotFoundError:
        return None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, judged only at SD-1.5 scale (n/a on a smoke run); the miniature model has
    only its FCC target."""
    scale, dev = report["settings"]["scale"], report["device"]
    fcc = report.get("fcc")
    fcc_ratio = fcc["ratio_on_off"] if fcc else None

    def row(target, threshold, value, where, note=None, applies=True):
        status = "n/a" if not applies or value is None else ("pass" if value <= threshold else "fail")
        return {"target": target, "threshold": threshold, "value": value, "where": where,
                "status": status, "note": note}

    if scale == "mini":
        return [row("FCC generation time on/off (miniature model)", TARGETS["fcc_ratio_mini"],
                    fcc_ratio, "whole stylize() call")]
    applies = scale == "sd15"
    na = None if applies else "smoke run: targets are for the SD-1.5 architecture at 512²"
    ok = {n: p for n, p in report.get("idl", {}).items() if p.get("status") == "ok"}
    best = min(ok, key=lambda n: ok[n]["projected_400_steps_s"], default=None)
    notes = []
    if best and not (dev["type"] == "cuda" and "H100" in dev["name"]):
        notes.append(f"target is for one H100; measured on {dev['name']}")
    full = [n for n in ok if ok[n]["idl_config"].get("lora_rank") is None]
    if best and best not in full and full:  # LoRA trains less than the paper does: show both
        fast = min(full, key=lambda n: ok[n]["projected_400_steps_s"])
        notes.append(f"fastest full fine-tune: {fast}, {ok[fast]['projected_400_steps_s']:.1f} s")
    rows = [row("400 IDL steps (fastest profile), s", TARGETS["idl_400_steps_s"],
                ok[best]["projected_400_steps_s"] if best else None, best,
                na or "; ".join(notes) or None, applies)]
    if dev["type"] == "cuda" and ok:
        low = min(ok, key=lambda n: ok[n]["peak_gpu_allocated_gib"])
        rows.append(row("peak memory of some profile, GiB", TARGETS["peak_memory_gib"],
                        ok[low]["peak_gpu_allocated_gib"], low,
                        na or "torch.cuda.max_memory_allocated", applies))
    else:
        rows.append(row("peak memory of some profile, GiB", TARGETS["peak_memory_gib"], None, None,
                        na or "GPU memory is only measured on CUDA", applies))
    rows.append(row("FCC generation time on/off", TARGETS["fcc_ratio"], fcc_ratio,
                    "whole stylize() call", na, applies))
    return rows


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="sd15")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated IDL profiles")
    p.add_argument("--idl-steps", type=int, default=20, help="timed IDL steps per profile")
    p.add_argument("--idl-warmup", type=int, default=3, help="untimed IDL steps first")
    p.add_argument("--aux-images", type=int, default=4, help="size of the auxiliary set")
    p.add_argument("--fcc-steps", type=int, default=50, help="DDIM steps of one stylization")
    p.add_argument("--fcc-repeats", type=int, default=None, help="timed runs (5; smoke: 2)")
    p.add_argument(
        "--fcc-dtype",
        choices=sorted(_DTYPES),
        default=None,
        help="inference dtype (fp16 on CUDA, fp32 on CPU)",
    )
    p.add_argument("--strength", type=float, default=0.8)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--no-idl", action="store_true", help="skip the IDL profiles")
    p.add_argument("--no-fcc", action="store_true", help="skip the FCC timing")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--work-dir", default=None, help="where train() writes its (deleted) output")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.profiles.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        p.error(f"unknown profile(s) {unknown}; choose from {list(PROFILES)}")
    args.profiles = names
    if args.idl_steps < 1 or args.idl_warmup < 1:
        p.error("--idl-steps and --idl-warmup must be >= 1")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA GPU found; use --device cpu (and --scale smoke on a CPU)")
    if args.scale == "mini":  # the IDL profiles are SD's GPU settings; the book times mini's IDL
        args.no_idl = True
    if args.fcc_repeats is None:
        args.fcc_repeats = 2 if args.scale == "smoke" else 5
    if args.fcc_dtype is None:
        args.fcc_dtype = "fp16" if args.device.startswith("cuda") else "fp32"
    if int(args.fcc_steps * args.strength) < 1:
        p.error("--fcc-steps × --strength must run at least one step")
    return args


def main(argv: list[str] | None = None) -> int:
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if importlib.util.find_spec("styo") is None:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    args = parse_args(argv)
    _quiet()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    report: dict[str, Any] = {
        "kind": args.scale,
        "note": {
            "smoke": "SMOKE RUN: reduced SD-shaped model at 64², proves the benchmark runs; not SD scale",
            "mini": "the book's miniature model (models/styo-mini) at 64²: FCC timing only",
            "sd15": "SD-1.5 architecture (random weights) at 512²",
        }[args.scale],
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(device),
        "versions": {
            "python": platform.python_version(),
            **{k: _version(k) for k in ("torch", "diffusers", "transformers", "accelerate")},
            **{k: _version(k) for k in ("peft", "bitsandbytes")},
        },
        "settings": {
            "scale": args.scale,
            "image_size": SCALES[args.scale]["image_size"],
            "idl_batch": 3,
            "idl_warmup": args.idl_warmup,
            "idl_steps": args.idl_steps,
            "aux_images": args.aux_images,
            "seed": args.seed,
            "argv": list(sys.argv[1:] if argv is None else argv),
        },
        "params": param_counts(args.scale),
        "idl": {},
    }
    failed = False
    if not args.no_idl:
        for name in args.profiles:
            print(f"IDL profile {name} ...", flush=True)
            try:
                report["idl"][name] = res = bench_idl(args, name, device)
            except Exception as e:  # keep going: one broken profile must not lose the others
                traceback.print_exc()
                failed = True
                report["idl"][name] = res = {
                    "status": "error",
                    "reason": f"{type(e).__name__}: {e}".splitlines()[0],
                    **{k: PROFILES[name][k] for k in ("about", "pipeline_dtype")},
                }
            if res["status"] == "ok":
                print(f"  median step {res['step_time_median_s']:.4f} s", flush=True)
            else:
                print(f"  {res['status']}: {res['reason']}", flush=True)
    if not args.no_fcc:
        print("FCC ...", flush=True)
        report["fcc"] = bench_fcc(args, device)
    report["targets"] = evaluate_targets(report)
    text = run_markdown(report)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = ("cpu" if device.type == "cpu" else slug(report["device"]["name"])) + f"-{args.scale}"
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (out_dir / f"{stem}.md").write_text(text)
    print()
    print(text)
    print(f"wrote {out_dir / stem}.json and .md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
