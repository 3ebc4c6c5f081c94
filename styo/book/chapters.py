"""What the book's chapters share: the backend switch, the example pair and one cached IDL run.

Chapters stay short by calling these. ``backend="mini"`` is the miniature world (the default
everywhere); ``backend="sd15"`` is Stable Diffusion v1.5 through the very same library calls, with
only the model id and a few scale-dependent settings changed. ``backend="tiny"`` is for developers:
the random 16×16 test pipeline, which checks a chapter's code in seconds (its pictures are noise).
``backend="sd15-shaped"`` is for CI: SD 1.5's architecture with random weights and narrow channels
(:mod:`styo.sd15_shaped`), with SD's settings at CI size, so the sd15 path runs without a download.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from ..data import generate_aux, model_fingerprint
from ..idl import IDLConfig, IDLResult, run_fingerprint, train
from ..memory import choose_sd_profile, profile_config
from ..pipeline import image_size, load_pipeline
from ..profiles import DEFAULT_MODEL, PROFILES
from ..prompts import styo_prompt
from ..runtime import estimate_t4

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
BACKENDS = ("mini", "sd15", "sd15-shaped", "tiny")
WORLD_BACKENDS = ("mini", "tiny")  # the backends whose pairs come from the miniature world
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Backend:
    """A model and the settings that depend on its scale (the paper's for SD, tuned for mini)."""

    name: str
    model: str
    idl: IDLConfig
    aux_prompt: str
    aux_count: int
    sample_steps: int
    guidance: float
    strength: float  # how deep the source is diffused before stylization (FCC, chapter 7)
    profile: str = ""  # the PROFILES entry the settings come from
    extra: dict[str, Any] = field(default_factory=dict)


def backend_settings(backend: str, sd_profile: str | None = None) -> Backend:
    """The settings of a backend; an unknown name is an error listing the valid ones.

    sd15 takes the SD profile that fits this machine's GPU (:func:`styo.memory.choose_sd_profile`;
    the paper's ``sd`` without a GPU) unless ``sd_profile`` names one.
    """
    if backend == "mini":
        return Backend(
            name="mini",
            model=str(DEFAULT_MODEL),
            idl=profile_config("mini", checkpoint_every=100),
            aux_prompt="a drawing with photo style of portrait",
            aux_count=PROFILES["mini"]["aux"],
            sample_steps=PROFILES["mini"]["sample_steps"],
            guidance=PROFILES["mini"]["guidance"],
            strength=PROFILES["mini"]["strength"],
            profile="mini",
        )
    if backend == "sd15":
        profile = sd_profile or choose_sd_profile()[0]
        return Backend(
            name="sd15",
            model=SD15,
            idl=profile_config(profile, checkpoint_every=0),
            aux_prompt="a photo portrait of a person, face, high quality",
            aux_count=PROFILES[profile]["aux"],
            sample_steps=PROFILES[profile]["sample_steps"],
            guidance=PROFILES[profile]["guidance"],
            strength=PROFILES[profile]["strength"],
            profile=profile,
        )
    if backend == "sd15-shaped":
        return Backend(
            name="sd15-shaped",
            model=str(cache_root() / "models" / "sd15-shaped"),
            # SD's settings, sized for CI; fp32 on a CPU (fp16 autocast needs CUDA)
            idl=profile_config("sd", checkpoint_every=0, mixed_precision="no"),
            aux_prompt="a photo portrait of a person, face, high quality",
            aux_count=4,
            sample_steps=4,
            guidance=PROFILES["sd"]["guidance"],
            strength=PROFILES["sd"]["strength"],
            profile="sd",
        )
    if backend == "tiny":
        return Backend(
            name="tiny",
            model="tiny",
            idl=IDLConfig(steps=4, lr=1e-3, checkpoint_every=0),
            aux_prompt="a drawing of portrait",
            aux_count=4,
            sample_steps=4,
            guidance=2.0,
            strength=0.8,
        )
    raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


class NeedsGPU(RuntimeError):
    """sd15 was asked for on a machine without a CUDA GPU, and the reader did not insist."""


def load_backend(backend: str, device: str | None = None, allow_cpu: bool = False):
    """The base pipeline of ``backend``: a local folder for mini, the hub id for sd15.

    sd15 without CUDA stops at once unless ``allow_cpu`` (or an explicit ``device``) says to go
    on: on a CPU a single chapter is hours of fp32 work after a 2 GB download, which nobody should
    start by accident. For sd15 it says which training profile this GPU gets and why.
    """
    settings = backend_settings(backend)
    if backend == "sd15" and device is None and not allow_cpu:
        import torch

        if not torch.cuda.is_available():
            raise NeedsGPU(
                "backend = 'sd15' needs a CUDA GPU and none was found: on Colab pick Runtime > "
                "Change runtime type > T4 GPU, or set allow_cpu = True in the parameters cell "
                "to run it on the CPU anyway (hours per chapter)"
            )
    if backend == "sd15":
        profile, why = choose_sd_profile()
        print("sd15 training profile:", why)
        print(estimate_t4(profile))
    if backend == "tiny":
        from ..testing import tiny_pipeline

        return tiny_pipeline()
    if backend == "sd15-shaped":  # built once into the cache, then loaded like SD 1.5's folder
        from ..sd15_shaped import ensure_folder

        ensure_folder(Path(settings.model).parent)
    return load_pipeline(settings.model, device=device)


def bench_pipeline(model: str | None = None):
    """A benchmark's (settings, pipeline): the shipped model (None), a folder run with mini's
    settings, or ``"tiny"``; library progress bars off, so a benchmark prints only its own."""
    from ..pipeline import quiet_library_bars

    quiet_library_bars()
    settings = backend_settings("tiny" if model == "tiny" else "mini")
    pipe = load_backend("tiny") if model == "tiny" else load_pipeline(model or settings.model)
    pipe.set_progress_bar_config(disable=True)
    return settings, pipe


def cache_root() -> Path:
    """Where chapters share generated and fine-tuned artefacts (``STYO_CACHE`` or .cache/styo)."""
    return Path(os.environ.get("STYO_CACHE", ROOT / ".cache" / "styo"))


def _digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def auxiliary_set(pipe, settings: Backend, n: int | None = None, seed: int = 0,
                  style: str | None = None) -> list[Image.Image]:
    """The auxiliary portraits, generated by the *base* model and cached (call before IDL).

    The auxiliary set teaches ``[S_src]`` the source's style apart from the source's face, so its
    portraits are drawn in the source's style: photos in the paper, whose sources are photos, and
    the profile's prompt here. In the miniature world (and the tiny test world) a source can be
    drawn in any pretraining style: ``style`` draws the set in it, with the world's caption
    ``a drawing with {style} style of portrait``.
    """
    if style is None:
        prompt = settings.aux_prompt
    elif settings.name in WORLD_BACKENDS:
        prompt = styo_prompt(style, "")  # the world's caption with a style and no content
    else:
        raise ValueError(f"style= draws the auxiliary set in a style of the miniature world; the "
                         f"{settings.name} backend has one auxiliary prompt: leave style unset")
    return generate_aux(
        pipe,
        n or settings.aux_count,
        prompt=prompt,
        cache_dir=cache_root() / "aux",
        seed=seed,
        num_inference_steps=settings.sample_steps,
        guidance_scale=settings.guidance,
    )


# Seeds of the rendered auxiliary portraits: far above the pairs', the chapters' and the judges'.
RENDERED_AUX_SEED = 900_000


def rendered_auxiliary_set(style: str, n: int, size: int, seed: int = RENDERED_AUX_SEED
                           ) -> list[Image.Image]:
    """``n`` portraits from the miniature world's renderer in ``style``, every attribute and the
    layout drawn at random (portrait ``i`` from seed ``seed + i``).

    The paper's auxiliary faces are photographs (FFHQ), not the base model's pictures, and the
    renderer is the miniature world's camera: its faces vary in every attribute, where the base
    model, asked for a portrait with no content words, repeats the faces it draws most often
    (:func:`styo.book.experiments.face_variety` counts them). It is
    the faithful counterpart of the paper's set, kept beside the generated one so that the two can
    be compared (``benchmarks/ablations.py --rendered-aux``).
    """
    import numpy as np

    from ..world.attributes import sample_attributes, validate
    from ..world.render import render

    validate(style, {})
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [render(sample_attributes(np.random.default_rng(seed + i)), style, seed + i, size)
            for i in range(n)]


def auxiliary_sets(pipe, settings: Backend, pairs, n: int | None = None, *, rendered: bool = False
                   ) -> dict[str | None, list[Image.Image]]:
    """One auxiliary set per source style of ``pairs`` (:func:`auxiliary_set`), by style; a pair
    without a known style (sd15's, a reader's) gets the profile's set, under ``None``.
    ``rendered=True`` takes each set from the renderer instead (:func:`rendered_auxiliary_set`;
    the miniature world's pairs only)."""
    styles = dict.fromkeys(p.source_style for p in pairs)
    if not rendered:
        return {style: auxiliary_set(pipe, settings, n, style=style) for style in styles}
    if settings.name not in WORLD_BACKENDS or None in styles:
        raise ValueError("rendered=True draws the auxiliary sets with the miniature world's renderer: "
                         "it needs pairs from the miniature world (each with a source style)")
    return {style: rendered_auxiliary_set(style, n or settings.aux_count, image_size(pipe))
            for style in styles}


def cached_idl(
    pipe,
    source: Image.Image,
    target: Image.Image,
    aux: list[Image.Image],
    config: IDLConfig,
    *,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> IDLResult:
    """IDL once per (model, images, settings): later chapters load the run instead of training.

    ``callback(step, loss)`` runs after each trained step (e.g. a live loss plot); a reloaded run
    calls it for none.

    The folder name is a digest of everything that shapes the result; ``idl.train`` re-checks the
    full fingerprint when it reloads, so a stale folder can never be mistaken for a match.
    """
    aux = aux if config.use_aux else []
    # The run's own fingerprint covers only the weights a checkpoint does not hold; the cache key
    # must also cover the starting weights of what is trained (a pipe fine-tuned earlier is a
    # different start).
    key = _digest(run_fingerprint(pipe, config, source, target, aux), model_fingerprint(pipe),
                  config.steps)
    out = cache_root() / "idl" / key
    return train(
        pipe, source, target, aux, config,
        output_dir=out, resume=out.exists(), progress=progress, callback=callback,
    )


def with_steps(config: IDLConfig, steps: int) -> IDLConfig:
    """A copy of ``config`` with another step count (chapters shrink it for CI)."""
    return replace(config, steps=steps)


# The miniature world's example pair: a photo-style face and a portrait in a style the base model
# never saw (mosaic), with different content so that content leaks are visible and measurable.
MINI_SOURCE = {
    "face_shape": "round", "skin_tone": "tan", "hair_colour": "red", "hair_cut": "curly",
    "eyes": "round", "mouth": "smiling", "glasses": "glasses", "head_tilt": "left",
    "background": "blue",
}
MINI_TARGET = {
    "face_shape": "long", "skin_tone": "dark", "hair_colour": "blonde", "hair_cut": "bun",
    "eyes": "closed", "mouth": "neutral", "glasses": "none", "head_tilt": "right",
    "background": "yellow",
}


@dataclass
class ExamplePair:
    source: Image.Image
    target: Image.Image
    source_attributes: dict[str, str] | None = None  # known in the miniature world only
    target_attributes: dict[str, str] | None = None
    source_style: str | None = None
    target_style: str | None = None
    # The renderer's drawing of the source's face in the target style, with the source's layout:
    # the picture a perfect stylization would show (the miniature world only).
    ideal: Image.Image | None = None


# The sd15 example pair, shipped with the book (``write_sd15_pair`` made it): the miniature world's
# pair rendered at 512 px by the world's renderer. Made by this project, so it may be
# redistributed, and in a style SD 1.5 does not know by name, so the one-shot premise is exercised.
SD15_PAIR = (ROOT / "book" / "images" / "sd15-source.png", ROOT / "book" / "images" / "sd15-target.png")
_PAIR_SIZE = {"mini": 64, "tiny": 16, "sd15": 512, "sd15-shaped": 128}


def write_sd15_pair(paths: tuple[Path, Path] = SD15_PAIR, size: int = 512) -> None:
    """Render the sd15 example pair (the mini pair at ``size`` px) into ``paths``."""
    from ..world.render import render

    for path, attrs, style, seed in ((paths[0], MINI_SOURCE, "photo", 0),
                                     (paths[1], MINI_TARGET, "mosaic", 1)):
        path.parent.mkdir(parents=True, exist_ok=True)
        render(attrs, style, seed, size=size).save(path, optimize=True)


def _reader_image(path: str | os.PathLike, size: int, role: str) -> Image.Image:
    """The reader's own image, validated, centre-cropped and resized as `styo stylize` does."""
    from ..data import load_image

    notices: list[str] = []
    image = load_image(path, size, notices=notices)
    for line in notices:
        print(f"{role}: {line}")
    return image


def example_pair(
    backend: str,
    pipe=None,
    *,
    source_style: str = "photo",
    target_style: str = "mosaic",
    source_attributes: dict[str, str] | None = None,
    target_attributes: dict[str, str] | None = None,
    seed: int = 0,
    source_path: str | os.PathLike | None = None,
    target_path: str | os.PathLike | None = None,
) -> ExamplePair:
    """Source face and target style image: the reader's files, or the book's pair.

    The book's pair is rendered in the miniature world (mini, tiny) or read from the two 512-px
    renders shipped for sd15. The mini pair differs in every attribute, so a content leak from the
    target is visible. ``source_path`` / ``target_path`` replace either image with a file of any
    size or colour mode, loaded as ``styo stylize`` loads it (each change is printed); the size is
    ``pipe``'s when given. A pair with a reader's image has no known attributes or styles, so it
    is not scored.
    """
    backend_settings(backend)  # an unknown backend is refused here
    size = image_size(pipe) if pipe is not None else _PAIR_SIZE.get(backend, 512)
    if backend in WORLD_BACKENDS:
        from ..world.render import render

        src = dict(source_attributes or MINI_SOURCE)
        tgt = dict(target_attributes or MINI_TARGET)
        images = [render(src, source_style, seed), render(tgt, target_style, seed + 1),
                  render(src, target_style, seed)]
        if size != images[0].size[0]:  # the test pipeline works on 16×16 images
            images = [im.resize((size, size), Image.Resampling.LANCZOS) for im in images]
        pair = ExamplePair(*images[:2], src, tgt, source_style, target_style, ideal=images[2])
    else:
        pair = ExamplePair(*(_reader_image(p, size, "example pair") for p in SD15_PAIR))
    if source_path is None and target_path is None:
        return pair
    # The judges compare with known attributes and styles: a pair with a reader's image has none.
    return ExamplePair(
        _reader_image(source_path, size, "source") if source_path is not None else pair.source,
        _reader_image(target_path, size, "target") if target_path is not None else pair.target,
    )


def load_tokenizer(backend: str):
    """The tokenizer of ``backend`` without its model.

    The prompts chapter only counts tokens: for mini it builds the very tokenizer saved inside the
    miniature pipeline, for sd15 it fetches SD 1.5's CLIP tokenizer alone (no 4 GB of weights), and
    for the test pipelines (sd15-shaped, tiny) it takes their own offline CLIP-format tokenizer.
    """
    if backend == "mini":
        from ..world.architecture import build_tokenizer

        return build_tokenizer()
    if backend == "sd15":
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(SD15, subfolder="tokenizer")
    return load_backend(backend).tokenizer


# The IDL chapter's side-by-side of the paper's settings and ours: (row name, how to read it).
SETTINGS_ROWS: tuple[tuple[str, Callable[[Backend], Any]], ...] = (
    ("learning rate (Adam)", lambda b: f"{b.idl.lr:g}"),
    ("IDL steps", lambda b: b.idl.steps),
    ("noise samples per term", lambda b: b.idl.batch_size),
    ("trained", lambda b: "UNet" + (" + text encoder" if b.idl.train_text_encoder else "")
     + (f" (LoRA {b.idl.lora_rank})" if b.idl.lora_rank else "")),
    ("precision", lambda b: "fp32" if b.idl.mixed_precision == "no" else b.idl.mixed_precision),
    ("gradient checkpointing", lambda b: b.idl.gradient_checkpointing),
    ("Adam moments", lambda b: "8-bit" if b.idl.use_8bit_adam else "fp32"),
    ("gradient clipping", lambda b: b.idl.max_grad_norm),
    ("auxiliary portraits", lambda b: b.aux_count),
    ("sampling steps", lambda b: b.sample_steps),
    ("guidance scale", lambda b: b.guidance),
)


def settings_table(columns: dict[str, Backend]) -> str:
    """A plain-text table of the settings that depend on the model's scale, one column per backend:
    a model trained from scratch needs other settings than SD, and the book states both."""
    lines = [f"{'':24s}" + "".join(f"{name:>16s}" for name in columns)]
    for name, get in SETTINGS_ROWS:
        lines.append(f"{name:24s}" + "".join(f"{get(b)!s:>16s}" for b in columns.values()))
    return "\n".join(lines)
