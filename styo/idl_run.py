"""Where an IDL run lives on disk, and the bookkeeping beside its loop.

A run folder holds ``checkpoints/step-XXXXXX/`` (trainable tensors and optimizer state in
safetensors, scalars in JSON: nothing is pickled), then ``pipeline/`` and ``losses.json`` when
done. A run is identified by its fingerprint (settings that shape the trajectory, the frozen
weights, the images): a resume with another fingerprint is refused, so a resumed run reaches
exactly the weights of an uninterrupted one. :class:`RunLog` keeps the loop in
:func:`styo.idl.train` free of all this: the loss history (one device sync per ten steps), the
progress bar, periodic checkpoints and a checkpoint on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file
from tqdm.auto import tqdm

from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .data import model_fingerprint
from .finetune import trainable_tensors
from .profiles import PROFILE_FILE

# Fields that do not change the training trajectory, so a resumed run may change them.
TRAJECTORY_FREE = {"steps", "checkpoint_every", "keep_checkpoints"}
# Settings added after runs were fingerprinted, with the value every earlier run trained with: at
# that value they stay out of the fingerprint, so the runs made before them are still found.
LATER_DEFAULTS = {"aux_weight": 1.0, "augment_target": False, "target_aux": 0}


@dataclass
class IDLResult:
    """What a run produced; ``pipeline`` is the caller's pipeline, fine-tuned in place."""

    losses: list[float]
    term_losses: dict[str, list[float]]
    pipeline: StableDiffusionPipeline
    output_dir: Path
    pipeline_dir: Path
    losses_path: Path
    checkpoint_dir: Path
    prompts: dict[str, str]
    resumed_from: int = 0


def _image_digest(images: list[Image.Image]) -> str:
    h = hashlib.sha256()
    for img in images:
        h.update(np.asarray(img.convert("RGB")).tobytes())
    return h.hexdigest()


def _frozen_modules(config: Any) -> tuple[str, ...]:
    """Modules whose weights a checkpoint does not hold, so a resume must get the same ones."""
    frozen = ["vae"] + ([] if config.train_text_encoder else ["text_encoder"])
    return tuple(frozen + (["unet"] if config.lora_rank is not None else []))


def later_settings(config: Any) -> dict[str, Any]:
    """The settings of ``LATER_DEFAULTS`` that ``config`` moves off the value every earlier run had."""
    return {k: getattr(config, k) for k, earlier in LATER_DEFAULTS.items() if getattr(config, k) != earlier}


def run_fingerprint(pipe, config: Any, source, target, aux) -> dict[str, Any]:
    """Everything that shapes the trajectory; a resume with a different one is refused."""
    trajectory = {k: v for k, v in config.to_dict().items()
                  if k not in TRAJECTORY_FREE and k not in LATER_DEFAULTS} | later_settings(config)
    return {
        "config": trajectory,
        "model": model_fingerprint(pipe, _frozen_modules(config)),
        "images": {
            "source": _image_digest([source]),
            "target": _image_digest([target]),
            "aux": _image_digest(aux),
        },
    }


def check_same_run(found: dict[str, Any], wanted: dict[str, Any], where: Path) -> None:
    diff = [k for k in wanted if found.get(k) != wanted[k]]
    if "config" in diff:
        keys = sorted(k for k in wanted["config"] if found["config"].get(k) != wanted["config"][k])
        diff = [d for d in diff if d != "config"] + [f"config.{k}" for k in keys]
    if diff:
        raise ValueError(
            f"{where} was written by a different run ({', '.join(diff)} differ); resuming it would "
            "not give the same result. Use the original settings, or another output folder."
        )


def finished(out: Path) -> bool:
    return (out / "losses.json").is_file() and (out / "pipeline" / "model_index.json").is_file()


def check_output_dir(out: Path, resume: bool) -> None:
    """Refuse to mix a new run into a folder that holds one, unless asked to resume it."""
    if resume:
        return
    if finished(out):
        raise FileExistsError(
            f"{out} already holds a finished IDL run; pass resume=True (--resume) to reuse it, "
            "or choose another output folder"
        )
    found = list_checkpoints(out / "checkpoints")
    if found:
        raise FileExistsError(
            f"{out} holds an unfinished IDL run (checkpoint {found[-1].name}); pass resume=True "
            "(--resume) to continue it, or choose another output folder"
        )


def result(pipe, out: Path, history: list[list[float]], prompts, start: int) -> IDLResult:
    terms = {name: [row[i + 1] for row in history] for i, name in enumerate(prompts)}
    return IDLResult(
        losses=[row[0] for row in history],
        term_losses=terms,
        pipeline=pipe,
        output_dir=out,
        pipeline_dir=out / "pipeline",
        losses_path=out / "losses.json",
        checkpoint_dir=out / "checkpoints",
        prompts=dict(prompts),
        resumed_from=start,
    )


def load_finished(pipe, out: Path, config: Any, fingerprint, prompts) -> IDLResult:
    """Resume of a finished run: put its fine-tuned weights into ``pipe`` and report it."""
    record = json.loads((out / "losses.json").read_text())
    check_same_run(record["fingerprint"], fingerprint, out)
    if len(record["losses"]) != config.steps:
        raise ValueError(
            f"{out} holds a finished run of {len(record['losses'])} steps, not {config.steps}; "
            "choose another output folder to train a different number of steps"
        )
    for name in ("unet", "text_encoder"):
        module = getattr(pipe, name)
        saved = type(module).from_pretrained(out / "pipeline", subfolder=name, use_safetensors=True)
        module.load_state_dict(saved.state_dict())
    rows = [
        [record["losses"][i]] + [record["terms"][k][i] for k in prompts]
        for i in range(len(record["losses"]))
    ]
    return result(pipe, out, rows, prompts, start=len(rows))


def resume_checkpoint(path: Path, modules, optimizer, accelerator, fingerprint, config) -> tuple[int, list]:
    """Load trainable weights, optimizer and loss-scaler state from a checkpoint (no pickle)."""
    meta = json.loads((path / "state.json").read_text())
    check_same_run(meta["extra"]["fingerprint"], fingerprint, path)
    step = int(meta["step"])
    if step > config.steps:
        raise ValueError(f"{path} is past the requested {config.steps} steps; use a new folder")
    trainable = trainable_tensors(modules)
    saved = load_file(path / "trainable.safetensors")
    if set(saved) != set(trainable):
        raise ValueError(
            f"{path} holds different trainable tensors than this run; use a new folder"
        )
    load_checkpoint(path, {"trainable": trainable}, optimizer)
    scaler = meta["extra"].get("scaler")
    if scaler and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(scaler)
    return step, meta["extra"]["losses"]


def save_pipeline(pipe, out: Path) -> None:
    """Save the whole pipeline (safetensors) atomically: a folder appears complete or not at all.

    The profile file of the folder the pipeline was loaded from goes along, so the fine-tuned
    model keeps its base model's settings (:func:`styo.profiles.profile_of`).
    """
    final, tmp = out / "pipeline", out / ".pipeline.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    origin = Path(str(getattr(pipe, "name_or_path", "") or "")) / PROFILE_FILE
    if origin.is_file():
        shutil.copyfile(origin, tmp / PROFILE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training after a step; a checkpoint holds everything so far."""


@contextmanager
def deferred_interrupts() -> Iterator[dict[str, int | None]]:
    """Turn the first SIGINT/SIGTERM into a flag checked between steps (so the checkpoint is a
    consistent state); a second signal interrupts at once. Only in the main thread."""
    flag: dict[str, int | None] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signal"] is not None:
            raise KeyboardInterrupt
        flag["signal"] = signum
        tqdm.write("stopping after this step and saving a checkpoint (press Ctrl-C again to abort)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class RunLog:
    """The loss history, progress bar and checkpoints of a run, updated once per step.

    ``save(step, history)`` writes a checkpoint and returns its folder; it is called every
    ``checkpoint_every`` steps and when a first Ctrl-C/SIGTERM arrives, after which the run stops
    with :class:`TrainingInterrupted` (a second signal aborts at once).
    """

    def __init__(self, config: Any, start: int, history: list[list[float]],
                 save: Callable[[int, list[list[float]]], Path], progress: bool,
                 callback: Callable[[int, float], None] | None) -> None:
        self.config, self.history, self.save, self.callback = config, history, save, callback
        self.pending: list[torch.Tensor] = []
        self.bar = tqdm(total=config.steps, initial=start, desc="IDL", disable=not progress,
                        dynamic_ncols=True)

    @contextmanager
    def running(self) -> Iterator[RunLog]:
        with deferred_interrupts() as self.stop, self.bar:
            yield self
        self.flush()

    def flush(self) -> None:
        """Move the pending per-step losses to the history: one device sync for many steps."""
        if self.pending:
            rows = torch.stack(self.pending).float().cpu()
            self.history.extend([[float(r.sum())] + r.tolist() for r in rows])
            self.pending.clear()

    def step_done(self, done: int, terms: torch.Tensor) -> None:
        """After optimiser step ``done`` (1-based) with per-term losses ``terms``."""
        self.pending.append(terms)
        self.bar.update(1)
        if self.callback is not None or done % 10 == 0 or done == self.config.steps:
            self.flush()
            recent = [row[0] for row in self.history[-10:]]
            self.bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
        every = self.config.checkpoint_every
        if (every and done % every == 0) or self.stop["signal"] is not None:
            self.flush()
            path = self.save(done, self.history)
        if self.stop["signal"] is not None:
            raise TrainingInterrupted(
                f"IDL stopped at step {done} of {self.config.steps}; checkpoint saved in {path}. "
                "Run again with resume=True (--resume) to finish."
            )
        if self.callback is not None:
            self.callback(done, self.history[-1][0])


def save_run_checkpoint(accelerator: Any, ckpt_dir: Path, step: int, modules: dict, optimizer: Any,
                        history: list[list[float]], fingerprint: dict, keep: int) -> Path:
    """Checkpoint: trainable tensors + optimizer tensors (safetensors), scalars in JSON."""
    accelerator.wait_for_everyone()
    path = ckpt_dir / f"step-{step:06d}"
    if accelerator.is_main_process:
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        extra = {"fingerprint": fingerprint, "losses": history, "scaler": scaler}
        path = save_checkpoint(ckpt_dir, step, {"trainable": trainable_tensors(modules)}, optimizer,
                               extra=extra, keep=keep)
    accelerator.wait_for_everyone()
    return path
