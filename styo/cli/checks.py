"""What ``styo stylize`` and ``styo attention`` share (:mod:`styo.cli.stylize`,
:mod:`styo.cli.attention`): cheap checks, model loading, the run folder.

A job checks everything that is cheap to check (numbers, identifiers, the output folder, the
device, the input files) *before* it imports diffusers or reads model weights, so a typo costs a
second, not a model load. Input files are only ever opened for reading; outputs go to their own
names inside ``--out``, each written to a temporary name and renamed, so an interrupted run never
leaves half an image. ``run.json`` records what a run did, and lets ``--resume`` check that it
finishes the same run.

Heavy modules (torch, diffusers, the method) are imported inside the functions that need them:
``styo --help`` and bad-input errors must not pay for them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import signal
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from ..profiles import PROFILES, profile_of
from ..prompts import MAX_REPEAT, MIN_REPEAT, Identifiers
from .errors import UsageError

PROFILE_WHY = {
    "mini": "the miniature world's model (trained from scratch; lr 1e-4 learns a style in 400 "
    "steps where SD's 1e-6 barely moves it, docs/design.md §3; its text encoder is trained too, as its "
    "identifiers have untrained embeddings)",
    "sd": "a model other than the miniature one: the paper's Stable Diffusion settings",
    "sd-t4": "a model other than the miniature one on a GPU too small for the paper's settings: "
    "the paper's lr and steps with gradient checkpointing, 8-bit Adam and fp16",
}
# Names a stylize run writes into --out; any of them present means the folder holds a run.
RUN_NAMES = ("run.json", "stylized.png", "reconstruction.png", "idl", "aux")
# Options that may differ when a run is resumed: they do not change its results.
RESUME_FREE = {"resume", "device", "progress", "checkpoint_every"}
OUTPUT_IMAGE = re.compile(r"(stylized|reconstruction)(-\d+)?\.png")
PROGRESS = {"dynamic_ncols": True}


def notice(text: str, kind: str = "notice") -> None:
    print(f"styo: {kind}: {text}", file=sys.stderr)


def print_notices(notices: list[str], limit: int = 8) -> None:
    """Each change made to an input, but not 200 lines for a big auxiliary folder."""
    for text in notices[:limit]:
        notice(text)
    if len(notices) > limit:
        notice(f"... and {len(notices) - limit} more (all listed in run.json)")


# --- cheap checks (no torch, no diffusers) -----------------------------------------------------


def check_positive(value: float, option: str, what: str) -> None:
    if not value > 0 or not math.isfinite(value):
        raise UsageError(f"{option} must be a positive {what}, got {value:g}")


def _check_repeat(value: int, option: str, paper: int) -> None:
    if not MIN_REPEAT <= value <= MAX_REPEAT:
        raise UsageError(
            f"{option} must be from {MIN_REPEAT} to {MAX_REPEAT} (the paper uses {paper}; "
            f"3 or less is recommended), got {value}"
        )


def check_stylize_numbers(args: argparse.Namespace) -> None:
    """Every number of ``styo stylize`` in its range, with the option's name in the message."""
    if args.steps is not None:
        check_positive(args.steps, "--steps", "number of IDL training steps")
    _check_repeat(args.n_s, "--n-s", 3)
    _check_repeat(args.n_c, "--n-c", 1)
    check_positive(args.samples, "--samples", "number of images")
    check_positive(args.batch_size, "--batch-size", "number of samples per loss term")
    for option in ("lr", "aux", "sample_steps"):
        value = getattr(args, option)
        if value is not None:
            check_positive(value, f"--{option.replace('_', '-')}", "number")
    if args.guidance is not None and not (0 <= args.guidance < 1000):
        raise UsageError(f"--guidance must be from 0 (no guidance) to 1000, got {args.guidance:g}")
    if args.strength is not None and not 0 < args.strength <= 1:
        raise UsageError(
            f"--strength must be in (0, 1] (how deep the source is diffused), got {args.strength:g}"
        )
    lo, hi = args.control_steps
    if not 0 <= lo <= hi <= 1:
        raise UsageError(
            f"--control-steps START END must satisfy 0 <= START <= END <= 1 (fractions of the "
            f"sampling steps), got {lo:g} {hi:g}"
        )
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be 0 (only on Ctrl-C) or more, got "
                         f"{args.checkpoint_every}")
    if args.lora_rank is not None:
        check_positive(args.lora_rank, "--lora-rank", "rank")
    if args.no_aux and (args.aux_dir or args.aux):
        raise UsageError("--no-aux trains without an auxiliary set; drop --aux/--aux-dir with it")


def identifiers(words: list[str] | None) -> Identifiers:
    """The four identifiers from ``--identifiers`` (default: the paper's ak47 aug sks m4a1)."""
    if not words:
        return Identifiers()
    try:
        return Identifiers(*words)
    except ValueError as e:
        raise UsageError(f"--identifiers: {e}") from e


def resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _is_output(path: Path, out: Path) -> bool:
    """Whether ``path`` is, or lies inside, something a stylize run writes into ``out``."""
    p, o = resolved(path), resolved(out)
    if p.parent == o and (p.name == "run.json" or OUTPUT_IMAGE.fullmatch(p.name)):
        return True
    return any(d == p or d in p.parents for d in (o / "idl", o / "aux"))


def check_out_dir(out: Path, resume: bool, inputs: list[Path], aux_dir: Path | None) -> None:
    """Refuse an ``--out`` that is a file, holds a run (unless resuming), or would hold an input.

    The input check holds even with ``--resume``: a run never writes over what it reads.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the results")
    inside = [p for p in resolved(out).parents if (p / "run.json").is_file()]
    if inside:
        raise UsageError(
            f"--out {out} lies inside the run in {inside[0]}; choose a folder outside it"
        )
    found = [name for name in RUN_NAMES if (out / name).exists()]
    if found and not resume:
        raise UsageError(
            f"--out {out} already holds a run ({', '.join(found)}); pass --resume to finish it, "
            "or choose another --out"
        )
    for path in inputs + ([aux_dir] if aux_dir else []):
        if _is_output(path, out) or (path == aux_dir and resolved(path) == resolved(out)):
            raise UsageError(
                f"input {path} lies where this run writes its results in {out}; move it or "
                "choose another --out (styo never writes over its inputs)"
            )


def check_device(name: str | None) -> None:
    """Fail in a second on a device that cannot work, before any weights are read."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"--device {name!r} is not a device; use cpu or cuda") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"--device {name}: no CUDA GPU is available on this machine; use --device cpu, "
            "or leave --device out to use a GPU only when there is one"
        )


def prevalidate_images(paths: dict[str, Path]) -> None:
    """Open and decode each input once (read-only), so that a bad file fails before the model
    loads; the real load happens at the model's size once it is known."""
    from ..data import ImageInputError, load_image

    for option, path in paths.items():
        try:
            load_image(path, 64, notices=[])
        except ImageInputError as e:
            raise UsageError(f"{option} {e}") from e


def check_aux_dir(aux_dir: str | None) -> None:
    if aux_dir is not None and not Path(aux_dir).expanduser().is_dir():
        what = "is a file, not a folder" if Path(aux_dir).exists() else "folder not found"
        raise UsageError(
            f"--aux-dir {aux_dir}: {what}. Pass a folder of portrait images, or --aux N to "
            "generate N of them with the base model"
        )


# --- loading the model -------------------------------------------------------------------------


def load_model(model: str | None, device: str | None):
    """The pipeline. A bad local folder is a usage error (exit 2); an unreachable hub is a
    runtime one (exit 1): the same command works where the hub can be reached."""
    from ..pipeline import (
        DEFAULT_MODEL,
        ModelLoadError,
        choose_device,
        is_hub_id,
        load_pipeline,
        quiet_library_bars,
    )

    quiet_library_bars()
    try:
        choose_device(device)
    except ModelLoadError as e:
        raise RuntimeError(f"--device {device}: {e}") from e
    target = DEFAULT_MODEL if model is None else model
    try:
        return load_pipeline(target, device)
    except ModelLoadError as e:
        if is_hub_id(target):
            raise RuntimeError(str(e)) from e
        raise UsageError(str(e)) from e


def attention_model(model: str | None) -> tuple[str | None, str]:
    """The model to load and its profile. A ``styo stylize`` output folder stands for the
    fine-tuned pipeline it holds, with the profile of the model it was tuned from."""
    folder = Path(model).expanduser() if model is not None else None
    if folder is None or not (folder / "run.json").is_file():
        return model, profile_of(model)
    tuned = folder / "idl" / "pipeline"
    if not (tuned / "model_index.json").is_file():
        raise UsageError(
            f"--model {model} is a stylize run without a fine-tuned pipeline (its IDL has not "
            "finished); finish it with `styo stylize ... --resume`, or pass a pipeline folder"
        )
    notice(f"{model} is a stylize run; using its fine-tuned pipeline {tuned}")
    try:
        profile = json.loads((folder / "run.json").read_text())["defaults"]["profile"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        profile = "sd"
    return str(tuned), profile if profile in PROFILES else "sd"


def check_prompts(tokenizer, prompts: dict[str, str]) -> None:
    """Refuse prompts the text encoder would silently truncate (dropping FCC's content tokens)."""
    from ..prompts import PromptTooLongError, check_length

    for name, prompt in prompts.items():
        try:
            check_length(tokenizer, prompt)
        except PromptTooLongError as e:
            label = name if name.startswith("--") else f"the {name} prompt"
            raise UsageError(f"{label} is too long: {e}") from e


# --- the run folder ----------------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Library versions that shape the numbers (and the images) of a run."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("styo", "torch", "diffusers", "transformers", "accelerate", "peft", "numpy",
                 "pillow", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def save_png(image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def command_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options as given, local paths made absolute: what --resume compares, in run.json.

    Compared before anything heavy is imported; the model-dependent defaults follow from the
    options (``--model`` among them), so equal options mean equal settings.
    """
    options = {k: v for k, v in vars(args).items() if k not in ("func", "debug", "command")}
    for key in ("source", "target", "aux_dir", "model"):
        options[key] = absolute_if_local(options.get(key))
    return json.loads(json.dumps(options))


def absolute_if_local(value: str | None) -> str | None:
    """A local path by absolute path (a resume from another folder compares equal), a hub id or
    None as it is."""
    return str(resolved(value)) if value and Path(value).expanduser().exists() else value


def check_resume_options(out: Path, options: dict[str, Any]) -> None:
    """``--resume`` finishes the run that is there; other options would make a different one."""
    path = out / "run.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())["options"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UsageError(
            f"--resume: {path} is not a styo stylize record ({type(e).__name__}: {e}); "
            "choose another --out"
        ) from e
    diff = [
        f"--{key.replace('_', '-')} {_show(old.get(key))} -> {_show(options.get(key))}"
        for key in sorted(set(old) | set(options))
        if key not in RESUME_FREE and old.get(key) != options.get(key)
    ]
    if diff:
        raise UsageError(
            f"--resume: {out} holds a run with other options ({'; '.join(diff)}); repeat its "
            "original options to finish it, or choose another --out for a new run"
        )


def _show(value: Any) -> str:
    if value is None:
        return "(default)"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """``kill`` stops a job like Ctrl-C does, so it records where it stopped (IDL installs its own,
    gentler handler while it trains and restores this one after)."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Timer:
    """Wall time per phase, for run.json."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(time.perf_counter() - t0, 3)

    def as_dict(self) -> dict[str, float]:
        return {**self.phases, "total": round(time.perf_counter() - self.start, 3)}
