"""The jobs behind ``styo stylize`` and ``styo attention``.

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

from .checkpoint import write_json
from .cli import UsageError
from .prompts import MAX_REPEAT, MIN_REPEAT, Identifiers

# Defaults that depend on the model. The miniature model was trained from scratch and barely moves
# at SD's fine-tuning rate (DESIGN.md §3); it was pretrained and probed with DDIM 25 / guidance 5.
PROFILES: dict[str, dict[str, Any]] = {
    "mini": {"lr": 1e-4, "aux": 32, "sample_steps": 25, "guidance": 5.0},
    "sd": {"lr": 1e-6, "aux": 200, "sample_steps": 50, "guidance": 7.5},
}
PROFILE_WHY = {
    "mini": "the miniature world's model (trained from scratch; lr 1e-4 learns a style in 400 "
    "steps where SD's 1e-6 barely moves it, DESIGN.md §3)",
    "sd": "a model other than the miniature one: the paper's Stable Diffusion settings",
}
# Names a stylize run writes into --out; any of them present means the folder holds a run.
RUN_NAMES = ("run.json", "stylized.png", "reconstruction.png", "idl", "aux")
# Options that may differ when a run is resumed: they do not change its results.
RESUME_FREE = {"resume", "device", "progress", "checkpoint_every"}
OUTPUT_IMAGE = re.compile(r"(stylized|reconstruction)(-\d+)?\.png")
PROGRESS = {"dynamic_ncols": True}


def _notice(text: str, kind: str = "notice") -> None:
    print(f"styo: {kind}: {text}", file=sys.stderr)


def _print_notices(notices: list[str], limit: int = 8) -> None:
    """Each change made to an input, but not 200 lines for a big auxiliary folder."""
    for text in notices[:limit]:
        _notice(text)
    if len(notices) > limit:
        _notice(f"... and {len(notices) - limit} more (all listed in run.json)")


# --- cheap checks (no torch, no diffusers) -----------------------------------------------------


def _positive(value: float, option: str, what: str) -> None:
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
    _positive(args.steps, "--steps", "number of IDL training steps")
    _check_repeat(args.n_s, "--n-s", 3)
    _check_repeat(args.n_c, "--n-c", 1)
    _positive(args.samples, "--samples", "number of images")
    _positive(args.batch_size, "--batch-size", "number of samples per loss term")
    for option in ("lr", "aux", "sample_steps"):
        value = getattr(args, option)
        if value is not None:
            _positive(value, f"--{option.replace('_', '-')}", "number")
    if args.guidance is not None and not (0 <= args.guidance < 1000):
        raise UsageError(f"--guidance must be from 0 (no guidance) to 1000, got {args.guidance:g}")
    if not 0 < args.strength <= 1:
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
        _positive(args.lora_rank, "--lora-rank", "rank")
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


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _is_output(path: Path, out: Path) -> bool:
    """Whether ``path`` is, or lies inside, something a stylize run writes into ``out``."""
    p, o = _resolved(path), _resolved(out)
    if p.parent == o and (p.name == "run.json" or OUTPUT_IMAGE.fullmatch(p.name)):
        return True
    return any(d == p or d in p.parents for d in (o / "idl", o / "aux"))


def check_out_dir(out: Path, resume: bool, inputs: list[Path], aux_dir: Path | None) -> None:
    """Refuse an ``--out`` that is a file, holds a run (unless resuming), or would hold an input.

    The input check holds even with ``--resume``: a run never writes over what it reads.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder for the results")
    inside = [p for p in _resolved(out).parents if (p / "run.json").is_file()]
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
        if _is_output(path, out) or (path == aux_dir and _resolved(path) == _resolved(out)):
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
    from .data import ImageInputError, load_image

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


def profile_of(model: str | None) -> str:
    """``mini`` for the miniature world's model (the default), ``sd`` for anything else."""
    from .pipeline import DEFAULT_MODEL

    if model is None or _resolved(model) == DEFAULT_MODEL.resolve():
        return "mini"
    return "sd"


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


def load_model(model: str | None, device: str | None):
    """The pipeline. A bad local folder is a usage error (exit 2); an unreachable hub is a
    runtime one (exit 1): the same command works where the hub can be reached."""
    from .pipeline import DEFAULT_MODEL, ModelLoadError, choose_device, is_hub_id, load_pipeline

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
    _notice(f"{model} is a stylize run; using its fine-tuned pipeline {tuned}")
    try:
        profile = json.loads((folder / "run.json").read_text())["defaults"]["profile"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        profile = "sd"
    return str(tuned), profile if profile in PROFILES else "sd"


def check_prompts(tokenizer, prompts: dict[str, str]) -> None:
    """Refuse prompts the text encoder would silently truncate (dropping FCC's content tokens)."""
    from .prompts import PromptTooLongError, check_length

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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def command_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options as given, local paths made absolute: what --resume compares, in run.json.

    Compared before anything heavy is imported; the model-dependent defaults follow from the
    options (``--model`` among them), so equal options mean equal settings.
    """
    options = {k: v for k, v in vars(args).items() if k not in ("func", "debug", "command")}
    for key in ("source", "target", "aux_dir", "model"):
        options[key] = _absolute_if_local(options.get(key))
    return json.loads(json.dumps(options))


def _absolute_if_local(value: str | None) -> str | None:
    """A local path by absolute path (a resume from another folder compares equal), a hub id or
    None as it is."""
    return str(_resolved(value)) if value and Path(value).expanduser().exists() else value


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


# --- styo stylize ------------------------------------------------------------------------------


def stylize_settings(
    args: argparse.Namespace, profile: str, ids: Identifiers
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every setting of the run with model-dependent defaults filled in, and which came from the
    model's profile (paths absolute)."""
    defaults = PROFILES[profile]
    settings = {
        "source": str(_resolved(args.source)),
        "target": str(_resolved(args.target)),
        "model": _absolute_if_local(args.model),
        "aux_dir": str(_resolved(args.aux_dir)) if args.aux_dir else None,
        "aux": None if args.no_aux or args.aux_dir else (args.aux or defaults["aux"]),
        "no_aux": args.no_aux,
        "steps": args.steps,
        "lr": args.lr if args.lr is not None else defaults["lr"],
        "batch_size": args.batch_size,
        "prompts": args.prompts,
        "identifiers": [ids.s_src, ids.s_tgt, ids.c_src, ids.c_tgt],
        "augment_training": args.augment_training,
        "train_text_encoder": args.train_text_encoder,
        "lora_rank": args.lora_rank,
        "mixed_precision": args.mixed_precision,
        "checkpoint_every": args.checkpoint_every,
        "n_s": args.n_s,
        "n_c": args.n_c,
        "fcc": not args.no_fcc,
        "samples": args.samples,
        "sample_steps": args.sample_steps or defaults["sample_steps"],
        "guidance": args.guidance if args.guidance is not None else defaults["guidance"],
        "strength": args.strength,
        "control_steps": list(args.control_steps),
        "seed": args.seed,
        "device": args.device,
        "resume": args.resume,
        "progress": args.progress,
    }
    chosen = {
        k: settings[k]
        for k in ("lr", "aux", "sample_steps", "guidance")
        if getattr(args, k) is None and settings[k] is not None
    }
    return settings, {"profile": profile, "why": PROFILE_WHY[profile], "chosen": chosen}


def trained_repeats(settings: dict[str, Any]) -> tuple[int, int]:
    """(n_s, n_c) of the source prompt IDL trains, which FCC's reconstruction branch then reads."""
    return (settings["n_s"], settings["n_c"]) if settings["augment_training"] else (1, 1)


def idl_config(settings: dict[str, Any], ids: Identifiers):
    """The :class:`~styo.idl.IDLConfig` for these settings."""
    from .idl import IDLConfig

    train_n_s, train_n_c = trained_repeats(settings)
    try:
        return IDLConfig(
            steps=settings["steps"],
            lr=settings["lr"],
            batch_size=settings["batch_size"],
            seed=settings["seed"],
            ids=ids,
            negative=settings["prompts"] == "contrastive",
            use_aux=not settings["no_aux"],
            train_text_encoder=settings["train_text_encoder"],
            lora_rank=settings["lora_rank"],
            mixed_precision=settings["mixed_precision"],
            checkpoint_every=settings["checkpoint_every"],
            train_n_s=train_n_s,
            train_n_c=train_n_c,
        )
    except ValueError as e:
        raise UsageError(str(e)) from e


def check_sampling(settings: dict[str, Any]) -> None:
    """FCC runs int(steps × strength) steps: refuse zero now rather than after IDL's minutes."""
    if int(settings["sample_steps"] * settings["strength"]) < 1:
        raise UsageError(
            f"--sample-steps {settings['sample_steps']} with --strength {settings['strength']:g} "
            "runs no denoising step; raise either"
        )


def fcc_prompts(ids: Identifiers, settings: dict[str, Any]) -> dict[str, str]:
    from .prompts import source_prompt, stylization_prompt

    negative = settings["prompts"] == "contrastive"
    return {
        "reconstruction": source_prompt(ids, negative, *trained_repeats(settings)),
        "stylisation": stylization_prompt(ids, settings["n_s"], settings["n_c"], negative),
    }


class StylizeRun:
    """The run folder: its record (run.json) and where each output goes."""

    def __init__(self, out: Path, record: dict[str, Any]) -> None:
        self.out = out
        self.record = record

    def save(self, **updates: Any) -> None:
        self.record.update(updates)
        write_json(self.out / "run.json", self.record)

    def image_path(self, kind: str, index: int) -> Path:
        return self.out / (f"{kind}.png" if index == 0 else f"{kind}-{index}.png")


def cmd_stylize(args: argparse.Namespace) -> int:
    """``styo stylize``: cheap checks, model, inputs, then aux set, IDL and FCC into --out."""
    check_stylize_numbers(args)
    ids = identifiers(args.identifiers)
    out = Path(args.out).expanduser()
    source, target = Path(args.source).expanduser(), Path(args.target).expanduser()
    aux_dir = Path(args.aux_dir).expanduser() if args.aux_dir else None
    check_out_dir(out, args.resume, [source, target], aux_dir)
    options = command_options(args)
    if args.resume:
        check_resume_options(out, options)
    check_device(args.device)
    check_aux_dir(args.aux_dir)
    prevalidate_images({"--source": source, "--target": target})

    timer = Timer()
    with timer.phase("import"):
        settings, chosen = stylize_settings(args, profile_of(args.model), ids)
        check_sampling(settings)
        config = idl_config(settings, ids)
    with timer.phase("load"):
        pipe = load_model(args.model, args.device)
        inputs = load_inputs(pipe, source, target, aux_dir)
    prompts = {f"IDL {k}": v for k, v in _idl_prompts(config).items()}
    prompts.update({f"FCC {k}": v for k, v in fcc_prompts(ids, settings).items()})
    check_prompts(pipe.tokenizer, prompts)
    warnings = identifier_warnings(pipe.tokenizer, ids)
    _print_notices(inputs["notices"])

    out.mkdir(parents=True, exist_ok=True)
    record = new_record(options, settings, chosen, pipe, prompts, inputs, warnings)
    run = StylizeRun(out, record)
    run.save()
    with sigterm_as_interrupt():
        try:
            finish_stylize(run, pipe, config, ids, settings, inputs, timer)
        except KeyboardInterrupt as e:
            run.save(status="interrupted", timings_s=timer.as_dict(), ended=_now())
            raise KeyboardInterrupt(interrupt_message(out, e, config.steps)) from None
        except Exception as e:
            run.save(status="failed", error=f"{type(e).__name__}: {e}", ended=_now())
            raise
    stylized = run.record["outputs"]["stylized"]
    print(f"wrote {', '.join(str(out / f) for f in stylized)}, {out / 'reconstruction.png'} and "
          f"{out / 'run.json'} in {run.record['timings_s']['total']:.0f} s")
    return 0


def _idl_prompts(config) -> dict[str, str]:
    from .idl import prompts_for

    return prompts_for(config)


def load_inputs(pipe, source: Path, target: Path, aux_dir: Path | None) -> dict[str, Any]:
    """Source, target and (a folder's) aux images at the model's size, with what was changed."""
    from .data import ImageInputError, load_aux_folder, load_image
    from .pipeline import image_size

    size = image_size(pipe)
    notices: list[str] = []
    try:
        images = {
            "source": load_image(source, size, notices=notices),
            "target": load_image(target, size, notices=notices),
            "aux": load_aux_folder(aux_dir, size, notices=notices) if aux_dir else None,
        }
    except ImageInputError as e:
        raise UsageError(str(e)) from e
    return {**images, "notices": notices, "size": size}


def identifier_warnings(tokenizer, ids: Identifiers) -> list[str]:
    """Warn (and go on) about identifiers that are ordinary words of the model's vocabulary."""
    from .prompts import common_word_identifiers

    warnings = [
        f"identifier {word!r} is an ordinary word of this model's vocabulary, so it already "
        "means something and may not pick up the new concept cleanly; rare keys such as sks "
        "work better (continuing)"
        for word in common_word_identifiers(tokenizer, ids)
    ]
    for text in warnings:
        _notice(text, "warning")
    return warnings


def new_record(options, settings, chosen, pipe, prompts, inputs, warnings) -> dict[str, Any]:
    """run.json as the run starts; outputs, losses and timings are added as they appear."""
    files = {"source": Path(settings["source"]), "target": Path(settings["target"])}
    return {
        "styo_run": 1,
        "status": "running",
        "started": _now(),
        "command": ["styo", *sys.argv[1:]],
        "options": options,
        "settings": settings,
        "defaults": chosen,
        "inputs": {k: {"path": str(_resolved(p)), "sha256": sha256(p)} for k, p in files.items()},
        "model": {
            "path_or_id": settings["model"] or "default (miniature world)",
            "class": type(pipe).__name__,
            "image_size": inputs["size"],
            "device": str(pipe.device),
            "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        },
        "prompts": prompts,
        "versions": versions(),
        "notices": inputs["notices"],
        "warnings": warnings,
    }


def finish_stylize(run: StylizeRun, pipe, config, ids, settings, inputs, timer: Timer) -> None:
    """The expensive part: aux set, IDL, FCC; each saves what it made before the next starts."""
    with timer.phase("aux"):
        aux = auxiliary_set(run.out, pipe, settings, inputs["aux"])
    with timer.phase("idl"):
        result = train_idl(run.out, pipe, config, inputs, aux, settings)
    run.save(idl={
        "output_dir": "idl",
        "steps": config.steps,
        "resumed_from": result.resumed_from,
        "losses": result.losses,
        "terms": result.term_losses,
    })
    with timer.phase("fcc"):
        outputs = sample_fcc(run, pipe, ids, settings, inputs["source"])
    run.save(status="finished", outputs=outputs, timings_s=timer.as_dict(), ended=_now())


def auxiliary_set(out: Path, pipe, settings: dict[str, Any], folder_images) -> list:
    """The folder's images, or portraits the base model generates (cached in --out/aux)."""
    if settings["no_aux"]:
        return []
    if folder_images is not None:
        return folder_images
    from .data import generate_aux

    # one bar per batch of generated images; leave=False keeps just the running one on screen
    pipe.set_progress_bar_config(
        desc=f"aux ({settings['aux']} images)", leave=False, disable=not settings["progress"],
        **PROGRESS,
    )
    return generate_aux(pipe, settings["aux"], cache_dir=out / "aux", seed=settings["seed"])


def train_idl(out: Path, pipe, config, inputs: dict[str, Any], aux: list, settings):
    from .idl import train

    return train(
        pipe,
        inputs["source"],
        inputs["target"],
        aux,
        config,
        output_dir=out / "idl",
        resume=settings["resume"],
        progress=settings["progress"],
    )


def sample_fcc(run: StylizeRun, pipe, ids, settings: dict[str, Any], source) -> dict[str, Any]:
    """Stylised images and reconstructions, written as PNGs; returns their names for run.json."""
    from .fcc import stylize

    pipe.set_progress_bar_config(desc="FCC", disable=not settings["progress"], **PROGRESS)
    rec_n_s, rec_n_c = trained_repeats(settings)
    result = stylize(
        pipe,
        source,
        ids=ids,
        n_s=settings["n_s"],
        n_c=settings["n_c"],
        negative=settings["prompts"] == "contrastive",
        rec_n_s=rec_n_s,
        rec_n_c=rec_n_c,
        num_inference_steps=settings["sample_steps"],
        guidance_scale=settings["guidance"],
        strength=settings["strength"],
        control_steps=tuple(settings["control_steps"]),
        fcc=settings["fcc"],
        seed=settings["seed"],
        num_images=settings["samples"],
    )
    names: dict[str, list[str]] = {"stylized": [], "reconstruction": []}
    for kind, images in (("stylized", result.images), ("reconstruction", result.reconstructions)):
        for i, image in enumerate(images):
            path = run.image_path(kind, i)
            save_png(image, path)
            names[kind].append(path.name)
    return {**names, "timesteps": result.timesteps, "content_map": result.content_map}


def interrupt_message(out: Path, error: BaseException, steps: int) -> str:
    """Where the run stopped and how to finish it."""
    from .checkpoint import list_checkpoints
    from .idl import TrainingInterrupted

    found = list_checkpoints(out / "idl" / "checkpoints")
    if isinstance(error, TrainingInterrupted) and found:
        step = int(found[-1].name.split("-")[1])
        return (
            f"IDL stopped at step {step} of {steps}; checkpoint saved in {found[-1]}. Run the "
            "same command with --resume to finish"
        )
    return (
        f"the run in {out} stopped before it finished; run the same command with --resume to "
        "finish it (finished parts are kept)"
    )


# --- styo attention ----------------------------------------------------------------------------


def check_attention_args(args: argparse.Namespace) -> Path:
    """Cheap checks of ``styo attention``; returns the output file."""
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out} must be a .png file")
    if out.exists():
        raise UsageError(f"--out {out} exists; choose another file (styo never overwrites one)")
    if not args.prompt.split():
        raise UsageError("--prompt is empty; pass the words to generate from")
    if args.steps is not None:
        _positive(args.steps, "--steps", "number of sampling steps")
    if args.guidance is not None and not (0 <= args.guidance < 1000):
        raise UsageError(f"--guidance must be from 0 (no guidance) to 1000, got {args.guidance:g}")
    return out


def generate_with_attention(
    pipe,
    prompt: str,
    *,
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    progress: bool = True,
):
    """One image from ``prompt`` by the pipeline's own sampler, with cross-attention recorded.

    The recorder and its processors work on FCC's two-branch batch (``[uncond_rec, uncond_sty,
    cond_rec, cond_sty]``, :mod:`styo.attention`). A plain generation fills both branches with the
    same prompt and the same starting latent, so both rows are the same image; only the ``sty``
    row is stored. Costs one extra image per step, and reuses the tested processors unchanged.
    Returns ``(image, recorder)``.
    """
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    from .attention import AttentionController, AttentionRecorder, attention_control
    from .pipeline import image_size
    from .prompts import check_length

    check_length(pipe.tokenizer, prompt)
    size = image_size(pipe)
    latent = size // pipe.vae_scale_factor
    recorder = AttentionRecorder(branches=("sty",))
    recorder.tokenizer, recorder.image_size = pipe.tokenizer, (size, size)
    recorder.prompts = {"rec": prompt, "sty": prompt}
    controller = AttentionController(
        [], recorder=recorder, guidance=guidance_scale > 1.0, latent_size=(latent, latent)
    )
    generator = torch.Generator("cpu").manual_seed(seed)
    shape = (1, pipe.unet.config.in_channels, latent, latent)
    start = randn_tensor(shape, generator=generator, dtype=pipe.unet.dtype)
    start = start.to(pipe.device).repeat(2, 1, 1, 1)

    def next_step(pipeline, i, t, kwargs):  # the controller must know the step of each UNet call
        controller.step = i + 1
        return kwargs

    pipe.set_progress_bar_config(desc="sampling", disable=not progress, **PROGRESS)
    with attention_control(pipe.unet, controller):
        images = pipe(
            [prompt, prompt],
            latents=start,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=size,
            width=size,
            callback_on_step_end=next_step,
        ).images
    return images[1], recorder


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
    save_figure(image, maps, args.prompt, out)
    print(f"wrote {out}")
    return 0


def save_figure(image, maps, prompt: str, out: Path) -> None:
    """The heat-map figure as a PNG; exclusive creation, so a file that appeared meanwhile stays."""
    import matplotlib

    matplotlib.use("Agg")  # a command line has no display
    import matplotlib.pyplot as plt

    from .viz import plot_word_maps

    fig = plot_word_maps(image, maps, title=prompt)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "xb") as fh:
            fig.savefig(fh, format="png", dpi=100)
    except FileExistsError as e:
        raise UsageError(f"--out {out} exists; choose another file") from e
    finally:
        plt.close(fig)
