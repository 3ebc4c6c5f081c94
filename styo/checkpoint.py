"""Safe, resumable training checkpoints: safetensors for tensors, JSON for everything else.

Never pickle: a checkpoint is a ``.safetensors`` file holding model and optimizer tensors plus a
JSON sidecar with the step, optimizer hyper-parameters and any scalars the loop needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step-(\d+)$")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Whole file or old file: write to a temporary name, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into flat tensors and JSON-able metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            key = f"{pid}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_tensors(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    folder: str | os.PathLike,
    step: int,
    modules: dict[str, torch.nn.Module | dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``folder/step-XXXXXX/`` atomically (temp dir, then rename) and prune old ones."""
    folder = Path(folder)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        sd = module if isinstance(module, dict) else module.state_dict()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in sd.items()}, tmp / f"{name}.safetensors"
        )
    meta: dict[str, Any] = {"step": step, "extra": extra or {}}
    if optimizer is not None:
        tensors, meta["optimizer"] = optimizer_tensors(optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _STEP_DIR.match(p.name) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def load_checkpoint(
    path: str | os.PathLike,
    modules: dict[str, torch.nn.Module | dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` in place; returns its JSON state."""
    path = Path(path)
    meta = json.loads((path / "state.json").read_text())
    for name, module in modules.items():
        sd = load_file(path / f"{name}.safetensors")
        if isinstance(module, dict):
            for k, v in sd.items():
                module[k].copy_(v)
        else:
            module.load_state_dict(sd)
    if optimizer is not None:
        load_optimizer_tensors(
            optimizer, load_file(path / "optimizer.safetensors"), meta["optimizer"]
        )
    return meta
