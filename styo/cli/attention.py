"""``styo attention``: generate from a prompt and draw one cross-attention heat map per word."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..profiles import PROFILES
from .checks import (
    attention_model,
    check_device,
    check_positive,
    check_prompts,
    load_model,
)
from .errors import UsageError


def check_attention_args(args: argparse.Namespace) -> Path:
    """Cheap checks of ``styo attention``; returns the output file."""
    if args.out is None and args.maps is None:
        raise UsageError("give --out FILE.png (the figure), --maps DIR (one PNG per word), or both")
    maps = Path(args.maps).expanduser() if args.maps else None
    if maps is not None and maps.exists() and (not maps.is_dir() or any(maps.iterdir())):
        raise UsageError(f"--maps {maps} is not a new or empty folder; choose another")
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and out.suffix.lower() != ".png":
        raise UsageError(f"--out {out} must be a .png file")
    if out is not None and out.exists():
        raise UsageError(f"--out {out} exists; choose another file (styo never overwrites one)")
    if not args.prompt.split():
        raise UsageError("--prompt is empty; pass the words to generate from")
    if args.steps is not None:
        check_positive(args.steps, "--steps", "number of sampling steps")
    if args.guidance is not None and not (0 <= args.guidance < 1000):
        raise UsageError(f"--guidance must be from 0 (no guidance) to 1000, got {args.guidance:g}")
    return out


def attention_words(prompt: str, words: list[str] | None) -> list[str]:
    """The words to map: those asked for (each must be in the prompt), else every word once."""
    available = list(dict.fromkeys(prompt.split()))
    if not words:
        return available
    missing = [w for w in words if w not in available]
    if missing:
        raise UsageError(
            f"--words {' '.join(missing)} not in the prompt; choose from: {' '.join(available)}"
        )
    return list(dict.fromkeys(words))


def cmd_attention(args: argparse.Namespace) -> int:
    """``styo attention``: generate from a prompt and draw one heat map per word."""
    out = check_attention_args(args)
    words = attention_words(args.prompt, args.words)
    check_device(args.device)
    model, profile = attention_model(args.model)
    pipe = load_model(model, args.device)
    check_prompts(pipe.tokenizer, {"--prompt": args.prompt})
    from ..generate import generate_with_attention

    defaults = PROFILES[profile]
    image, recorder = generate_with_attention(
        pipe,
        args.prompt,
        seed=args.seed,
        num_inference_steps=args.steps or defaults["sample_steps"],
        guidance_scale=args.guidance if args.guidance is not None else defaults["guidance"],
        progress=args.progress,
    )
    maps = recorder.aggregate(words, branch="sty")
    if out is not None:
        save_figure(image, maps, args.prompt, out)
        print(f"wrote {out}")
    if args.maps:
        folder = save_word_maps(image, maps, Path(args.maps).expanduser())
        print(f"wrote {folder}/image.png and {len(maps)} word maps")
    return 0


def save_word_maps(image, maps, folder: Path) -> Path:
    """``image.png`` and one ``<word>.png`` per word: the heat map (already scaled to [0, 1] by its
    maximum) as 8-bit grey at the image's size, so anyone can threshold and score it."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "image.png")
    for word, heat in maps.items():
        grey = np.clip(np.asarray(heat) * 255 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(grey, "L").save(folder / f"{word}.png")
    return folder


def save_figure(image, maps, prompt: str, out: Path) -> None:
    """The heat-map figure as a PNG; exclusive creation, so a file that appeared meanwhile stays."""
    import matplotlib

    matplotlib.use("Agg")  # a command line has no display
    import matplotlib.pyplot as plt

    from ..book.viz import plot_word_maps

    fig = plot_word_maps(image, maps, title=prompt)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "xb") as fh:
            fig.savefig(fh, format="png", dpi=100)
    except FileExistsError as e:
        raise UsageError(f"--out {out} exists; choose another file") from e
    finally:
        plt.close(fig)
