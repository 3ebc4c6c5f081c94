"""Loading a Stable Diffusion pipeline by local folder or hub id, on a chosen device and dtype.

The miniature world's model and SD 1.5 take exactly this path (docs/design.md §2): to the method a model
is a diffusers pipeline folder. Loading is strict (safetensors only, no remote code) and every way
it can fail ends in a :class:`ModelLoadError` that says what to do instead.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from .profiles import DEFAULT_MODEL

# Pipelines whose folder layout and components StableDiffusionPipeline loads as SD 1.x/2.x.
_SD_CLASSES = {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")
_LAYOUT = (
    "a diffusers pipeline folder (as written by save_pretrained) holds model_index.json and the "
    "subfolders unet/, vae/, text_encoder/, tokenizer/ and scheduler/"
)


def _dtype_kwarg() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (the old name now warns); use what it has."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


_DTYPE_KWARG = _dtype_kwarg()


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and how to point at a usable one."""


def choose_device(device: str | torch.device | None = None) -> torch.device:
    """``None``: CUDA when present, else CPU. Asking for CUDA without a GPU fails early."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelLoadError(f"unknown device {device!r}; use cpu or cuda") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("no CUDA GPU found; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelLoadError(
            f"{device} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)"
        )
    return dev


def choose_dtype(device: torch.device, dtype: torch.dtype | None = None) -> torch.dtype:
    """fp16 on CUDA (SD's usual inference precision), fp32 elsewhere, unless asked otherwise."""
    if dtype is not None:
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32


def is_hub_id(model: str | os.PathLike) -> bool:
    """A str that names no local path and looks like ``owner/name`` is meant for the hub."""
    if not isinstance(model, str) or Path(model).expanduser().exists():
        return False
    return bool(_HUB_ID.match(model)) and not model.startswith((".", "~"))


def _check_local_folder(folder: Path) -> None:
    """Refuse anything that is not an SD-style diffusers pipeline folder, naming the folder."""
    if not folder.exists():
        hint = (
            "The miniature world's model has not been built yet: run `styo world pretrain`, "
            "or pass --model with a pipeline folder or a hub id."
            if folder.resolve() == DEFAULT_MODEL
            else f"Check the path; {_LAYOUT}."
        )
        raise ModelLoadError(f"model folder {folder} does not exist. {hint}")
    if not folder.is_dir() or not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json): {_LAYOUT}. "
            "Pass such a folder or a hub id with --model."
        )
    try:
        cls = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{folder}/model_index.json is not valid JSON ({e})") from e
    if cls not in _SD_CLASSES:
        raise ModelLoadError(
            f"{folder} holds a {cls}, but StyO needs a Stable Diffusion 1.x/2.x pipeline "
            f"({', '.join(sorted(_SD_CLASSES))})"
        )


def _offline_message(model_id: str, error: Exception) -> str:
    """Why a hub load failed, and how to work from a local folder instead."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    why = (
        "the Hub is offline here (HF_HUB_OFFLINE is set)"
        if offline
        else "the Hub could not be reached or has no such model"
    )
    first_line = str(error).splitlines()[0] if str(error) else ""
    return (
        f"cannot load {model_id!r} from the Hugging Face Hub: {why}, and it is not in the local "
        f"cache. Download it where there is internet (`hf download {model_id} --local-dir DIR`) "
        f"and pass that folder with --model DIR, or leave --model out to use the miniature "
        f"model. No local folder {model_id!r} exists either. "
        f"({type(error).__name__}: {first_line})"
    )


def _from_hub(model_id: str, kwargs: dict) -> StableDiffusionPipeline:
    """Download (or take from the cache) the fp16 weights: half the download of SD 1.5's fp32
    ones (about 2 GB instead of 4), cast to the dtype asked for. A model published without an
    fp16 variant is loaded as it is."""
    try:
        try:
            return StableDiffusionPipeline.from_pretrained(model_id, variant="fp16", **kwargs)
        except ValueError as e:  # diffusers: no files of this variant in the repository
            if "variant" not in str(e):
                raise
            return StableDiffusionPipeline.from_pretrained(model_id, **kwargs)
    except OSError as e:  # diffusers reports offline / not-cached / unknown repo as OSError
        raise ModelLoadError(_offline_message(model_id, e)) from e


def load_pipeline(
    model: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> StableDiffusionPipeline:
    """Load an SD pipeline from a local folder or a hub id, safetensors only, no safety checker.

    The device is checked before any weights are read, so ``--device cuda`` on a CPU machine fails
    in milliseconds rather than after loading gigabytes.
    """
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    kwargs = {
        _DTYPE_KWARG: dt,
        "use_safetensors": True,
        "safety_checker": None,
        "requires_safety_checker": False,
    }
    if is_hub_id(model):
        pipe = _from_hub(str(model), kwargs)
    else:
        folder = Path(model).expanduser()
        _check_local_folder(folder)
        try:
            pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(
                f"{folder} looks like a pipeline folder but could not be loaded "
                f"(only .safetensors weights are accepted): {e}"
            ) from e
    return pipe.to(dev)


def assemble_pipeline(vae, text_encoder, tokenizer, unet, scheduler) -> StableDiffusionPipeline:
    """An SD pipeline from its five parts (no safety checker, image encoder or feature extractor).

    How the tiny test pipeline, the miniature world and the SD-scale benchmark are put together.
    """
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def image_size(pipe: StableDiffusionPipeline) -> int:
    """Side of the images the pipeline was trained on: latent sample size × VAE downscale."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def quiet_library_bars() -> None:
    """diffusers' and transformers' own bars (loading components, loading and writing weights)
    drown the job's bars; hub download bars, useful for a first SD download, stay on."""
    import huggingface_hub.utils as hub
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    hub_on = not hub.are_progress_bars_disabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # also switches the hub's off ...
    if hub_on:
        hub.enable_progress_bars()  # ... so put those back
