"""Settings that depend on the model's scale: one source for the command line and the book.

The miniature model was trained from scratch and barely moves at SD's fine-tuning rate
(docs/design.md §3): it learns a style in 400 steps at lr 1e-4, and was pretrained and probed with
DDIM 25 / guidance 5. It stylizes (and draws its auxiliary portraits) at guidance 10: over 12
photo sources of the shipped model, with FCC, the target style is read in 0.71 of the pictures at
guidance 10 against 0.28 at 5, and the joint score is 0.29 against 0.04
(benchmarks/results/ablations-photo-sources.md and ablations-guidance5.md). Its IDL trains the
text encoder too: the identifiers never occur in the world's captions, so its from-scratch text
encoder gives them untrained embeddings, and with the UNet alone the held-out style is not learned
at all (benchmarks/results/idl-tuning.md). Its source is diffused to strength 0.7, not 0.8 and not
the paper's 1.0 (both branches from the same noise): over 12 pairs of the shipped model (sources
in every pretraining style), with FCC, 0.7 keeps more of the source's content and head where 1.0
mostly draws the target whole, and its mean joint score is the higher, 0.21 against 0.06
(benchmarks/results/ablations.md, `--paper-strength`). Any other model gets the paper's Stable
Diffusion settings.

``sd-t4`` is the paper's method on a 15 GB GPU (a free Colab T4): the paper's lr and steps, but
trained with gradient checkpointing and 8-bit Adam so that full fine-tuning of the UNet fits
(:mod:`styo.memory` adds up why), and a smaller auxiliary set and fewer sampling steps so that a
chapter fits a free session. Which SD profile runs is chosen by the GPU's memory
(:func:`styo.memory.choose_sd_profile`).

A model folder names its profile in a ``styo.json`` beside ``model_index.json``
(``{"profile": "mini"}``), so a copy of the miniature model anywhere keeps its settings.
Kept free of torch and diffusers: the command line reads it before it loads anything heavy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# The miniature world's pipeline, shipped with the repository: the default model everywhere.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "styo-mini"
PROFILE_FILE = "styo.json"

# The paper's settings for Stable Diffusion: also the defaults of IDLConfig, stylize and
# generate_with_attention, which read them from here.
PAPER_SD = {"steps": 400, "lr": 1e-6, "aux": 200, "sample_steps": 50, "guidance": 7.5,
       "strength": 0.8, "train_text_encoder": False, "mixed_precision": "fp16",
       "gradient_checkpointing": False, "use_8bit_adam": False}

PROFILES: dict[str, dict[str, Any]] = {
    "mini": {"steps": 400, "lr": 1e-4, "aux": 32, "sample_steps": 25, "guidance": 10.0,
             "strength": 0.7, "train_text_encoder": True, "mixed_precision": "no",
             "gradient_checkpointing": False, "use_8bit_adam": False},
    "sd": PAPER_SD,
    "sd-t4": {**PAPER_SD, "aux": 64, "sample_steps": 30,
              "gradient_checkpointing": True, "use_8bit_adam": True},
}

# The profile keys that are IDLConfig fields (the training options).
IDL_KEYS = ("steps", "lr", "train_text_encoder", "mixed_precision", "gradient_checkpointing",
            "use_8bit_adam")


def idl_fields(profile: str) -> dict[str, Any]:
    """The IDLConfig fields a profile sets (``IDLConfig(**idl_fields(p))``)."""
    return {k: PROFILES[profile][k] for k in IDL_KEYS}


def profile_of(model: str | os.PathLike | None) -> str:
    """The profile a model folder names in its ``styo.json``; ``mini`` for None (the default
    model), ``sd`` for a folder without the file, a hub id, or an unknown profile name."""
    if model is None:
        model = DEFAULT_MODEL
    path = Path(model).expanduser() / PROFILE_FILE
    try:
        name = json.loads(path.read_text()).get("profile")
    except (OSError, ValueError, AttributeError):
        return "sd"
    return name if name in PROFILES else "sd"
