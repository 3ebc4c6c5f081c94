"""Settings that depend on the model's scale: one source for the command line and the book.

The miniature model was trained from scratch and barely moves at SD's fine-tuning rate
(DESIGN.md §3): it learns a style in 400 steps at lr 1e-4, and was pretrained and probed with
DDIM 25 / guidance 5. Its IDL trains the text encoder too: the identifiers never occur in the
world's captions, so its from-scratch text encoder gives them untrained embeddings, and with the
UNet alone the held-out style is not learned at all (stylised with FCC: style 0.00 against 0.56,
benchmarks/results/idl-tuning.md). Its source is diffused to strength 0.7, not 0.8: on the
finished model, with FCC and the augmented prompt, 0.8 kept 0.40 of the source's content and 0.7
kept 0.67 for a little less style (0.56 against 0.67; benchmarks/results/fcc-probe.md). Any other
model gets the paper's Stable Diffusion settings.
Kept free of torch and diffusers: the command line reads it before it loads anything heavy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The miniature world's pipeline, shipped with the repository: the default model everywhere.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "styo-mini"

PROFILES: dict[str, dict[str, Any]] = {
    "mini": {"steps": 400, "lr": 1e-4, "aux": 32, "sample_steps": 25, "guidance": 5.0,
             "strength": 0.7, "train_text_encoder": True},
    "sd": {"steps": 400, "lr": 1e-6, "aux": 200, "sample_steps": 50, "guidance": 7.5,
           "strength": 0.8, "train_text_encoder": False},
}


def profile_of(model: str | os.PathLike | None) -> str:
    """``mini`` for the miniature world's model (the default), ``sd`` for anything else."""
    if model is None or Path(model).expanduser().resolve() == DEFAULT_MODEL.resolve():
        return "mini"
    return "sd"
