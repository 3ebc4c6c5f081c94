"""``styo stylize``: check everything cheap, then aux set, IDL and FCC into a run folder.

The checks, model loading and run-folder helpers it shares with ``styo attention`` are in
:mod:`styo.cli.checks`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..checkpoint import write_json
from ..profiles import PROFILES, profile_of
from ..prompts import Identifiers
from .checks import (
    PROFILE_WHY,
    PROGRESS,
    Timer,
    absolute_if_local,
    check_aux_dir,
    check_device,
    check_out_dir,
    check_prompts,
    check_resume_options,
    check_stylize_numbers,
    command_options,
    identifiers,
    load_model,
    notice,
    now,
    prevalidate_images,
    print_notices,
    resolved,
    save_png,
    sha256,
    sigterm_as_interrupt,
    versions,
)
from .errors import UsageError


def model_profile(model: str | None, device: str | None) -> tuple[str, str]:
    """The settings profile of a run and why.

    The model folder names its own (``styo.json``). Stable Diffusion's settings then depend on
    the GPU: the paper's full fine-tuning needs about 19 GiB, so a smaller GPU (a free Colab T4)
    gets the ``sd-t4`` profile, whose estimated peak fits (:func:`styo.memory.choose_sd_profile`).
    """
    profile = profile_of(model)
    if profile != "sd" or _on_gpu(device) is False:
        return profile, PROFILE_WHY[profile]
    from ..memory import choose_sd_profile

    name, because = choose_sd_profile()
    return name, f"{PROFILE_WHY[name]} ({because})"


def _on_gpu(device: str | None) -> bool:
    """Whether the run trains on CUDA: --device as given (already checked), else the pipeline's
    own default (:func:`styo.pipeline.choose_device`)."""
    import torch

    from ..pipeline import choose_device

    return (torch.device(device) if device is not None else choose_device()).type == "cuda"


def stylize_settings(
    args: argparse.Namespace, profile: str, ids: Identifiers, why: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every setting of the run with model-dependent defaults filled in, and which came from the
    model's profile (paths absolute)."""
    defaults = PROFILES[profile]
    settings = {
        "source": str(resolved(args.source)),
        "target": str(resolved(args.target)),
        "model": absolute_if_local(args.model),
        "aux_dir": str(resolved(args.aux_dir)) if args.aux_dir else None,
        "aux": None if args.no_aux or args.aux_dir else (args.aux or defaults["aux"]),
        "no_aux": args.no_aux,
        "steps": args.steps if args.steps is not None else defaults["steps"],
        "lr": args.lr if args.lr is not None else defaults["lr"],
        "batch_size": args.batch_size,
        "prompts": args.prompts,
        "identifiers": [ids.s_src, ids.s_tgt, ids.c_src, ids.c_tgt],
        "augment_training": args.augment_training,
        # LoRA adapts the UNet only, so a LoRA run never takes the profile's text-encoder training
        "train_text_encoder": (args.train_text_encoder if args.train_text_encoder is not None
                               else defaults["train_text_encoder"] and args.lora_rank is None),
        "lora_rank": args.lora_rank,
        # fp16 and bf16 autocast are for GPUs; a CPU run keeps fp32 unless asked otherwise
        "mixed_precision": args.mixed_precision or (
            defaults["mixed_precision"] if _on_gpu(args.device) else "no"),
        "gradient_checkpointing": defaults["gradient_checkpointing"],
        "use_8bit_adam": defaults["use_8bit_adam"],
        "checkpoint_every": args.checkpoint_every,
        "n_s": args.n_s,
        "n_c": args.n_c,
        "fcc": not args.no_fcc,
        "samples": args.samples,
        "sample_steps": args.sample_steps or defaults["sample_steps"],
        "guidance": args.guidance if args.guidance is not None else defaults["guidance"],
        "strength": args.strength if args.strength is not None else defaults["strength"],
        "control_steps": list(args.control_steps),
        "seed": args.seed,
        "device": args.device,
        "resume": args.resume,
        "progress": args.progress,
    }
    chosen = {
        k: settings[k]
        for k in ("steps", "lr", "aux", "sample_steps", "guidance", "strength", "train_text_encoder",
                  "mixed_precision")
        if getattr(args, k) is None and settings[k] is not None
    }
    chosen |= {k: settings[k] for k in ("gradient_checkpointing", "use_8bit_adam") if settings[k]}
    return settings, {"profile": profile, "why": why or PROFILE_WHY[profile], "chosen": chosen}


def trained_repeats(settings: dict[str, Any]) -> tuple[int, int]:
    """(n_s, n_c) of the source prompt IDL trains, which FCC's reconstruction branch then reads."""
    return (settings["n_s"], settings["n_c"]) if settings["augment_training"] else (1, 1)


def idl_config(settings: dict[str, Any], ids: Identifiers):
    """The :class:`~styo.idl.IDLConfig` for these settings."""
    from ..idl import IDLConfig

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
            gradient_checkpointing=settings["gradient_checkpointing"],
            use_8bit_adam=settings["use_8bit_adam"],
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
    from ..prompts import source_prompt, stylization_prompt

    negative = settings["prompts"] == "contrastive"
    return {
        "reconstruction": source_prompt(ids, negative, *trained_repeats(settings)),
        "stylization": stylization_prompt(ids, settings["n_s"], settings["n_c"], negative),
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
        profile, why = model_profile(args.model, args.device)
        settings, chosen = stylize_settings(args, profile, ids, why)
        check_sampling(settings)
        config = idl_config(settings, ids)
    with timer.phase("load"):
        pipe = load_model(args.model, args.device)
        inputs = load_inputs(pipe, source, target, aux_dir)
    prompts = {f"IDL {k}": v for k, v in _idl_prompts(config).items()}
    prompts.update({f"FCC {k}": v for k, v in fcc_prompts(ids, settings).items()})
    check_prompts(pipe.tokenizer, prompts)
    warnings = identifier_warnings(pipe.tokenizer, ids)
    print_notices(inputs["notices"])

    out.mkdir(parents=True, exist_ok=True)
    record = new_record(options, settings, chosen, pipe, prompts, inputs, warnings)
    run = StylizeRun(out, record)
    run.save()
    with sigterm_as_interrupt():
        try:
            finish_stylize(run, pipe, config, ids, settings, inputs, timer)
        except KeyboardInterrupt as e:
            run.save(status="interrupted", timings_s=timer.as_dict(), ended=now())
            raise KeyboardInterrupt(interrupt_message(out, e, config.steps)) from None
        except Exception as e:
            run.save(status="failed", error=f"{type(e).__name__}: {e}", ended=now())
            raise
    stylized = run.record["outputs"]["stylized"]
    print(f"wrote {', '.join(str(out / f) for f in stylized)}, {out / 'reconstruction.png'} and "
          f"{out / 'run.json'} in {run.record['timings_s']['total']:.0f} s")
    return 0


def _idl_prompts(config) -> dict[str, str]:
    from ..idl import prompts_for

    return prompts_for(config)


def load_inputs(pipe, source: Path, target: Path, aux_dir: Path | None) -> dict[str, Any]:
    """Source, target and (a folder's) aux images at the model's size, with what was changed."""
    from ..data import ImageInputError, load_aux_folder, load_image
    from ..pipeline import image_size

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
    from ..prompts import common_word_identifiers

    warnings = [
        f"identifier {word!r} is an ordinary word of this model's vocabulary, so it already "
        "means something and may not pick up the new concept cleanly; rare keys such as sks "
        "work better (continuing)"
        for word in common_word_identifiers(tokenizer, ids)
    ]
    for text in warnings:
        notice(text, "warning")
    return warnings


def new_record(options, settings, chosen, pipe, prompts, inputs, warnings) -> dict[str, Any]:
    """run.json as the run starts; outputs, losses and timings are added as they appear."""
    files = {"source": Path(settings["source"]), "target": Path(settings["target"])}
    return {
        "styo_run": 1,
        "status": "running",
        "started": now(),
        "command": ["styo", *sys.argv[1:]],
        "options": options,
        "settings": settings,
        "defaults": chosen,
        "inputs": {k: {"path": str(resolved(p)), "sha256": sha256(p)} for k, p in files.items()},
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
    run.save(status="finished", outputs=outputs, timings_s=timer.as_dict(), ended=now())


def auxiliary_set(out: Path, pipe, settings: dict[str, Any], folder_images) -> list:
    """The folder's images, or portraits the base model generates (cached in --out/aux)."""
    if settings["no_aux"]:
        return []
    if folder_images is not None:
        return folder_images
    from ..data import generate_aux

    # one bar per batch of generated images; leave=False keeps just the running one on screen
    pipe.set_progress_bar_config(
        desc=f"aux ({settings['aux']} images)", leave=False, disable=not settings["progress"],
        **PROGRESS,
    )
    return generate_aux(pipe, settings["aux"], cache_dir=out / "aux", seed=settings["seed"])


def train_idl(out: Path, pipe, config, inputs: dict[str, Any], aux: list, settings):
    from ..idl import train

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
    """Stylized images and reconstructions, written as PNGs; returns their names for run.json."""
    from ..fcc import stylize

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
    from ..checkpoint import list_checkpoints
    from ..idl import TrainingInterrupted

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


