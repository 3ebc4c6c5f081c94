"""`styo stylize` end to end on the shipped miniature model, with no --model.

The other command-line tests use the random tiny pipeline, which proves the plumbing but draws
noise. This one runs the default model on a rendered photo face and a mosaic portrait, the book's
example pair, with short but real settings, and checks what a reader would: the run picks the
miniature profile, writes its pictures at the model's size, and the reconstruction branch redraws
the source face (the judges read the source's head tilt and most of its attributes in it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from styo.book import MINI_SOURCE, MINI_TARGET
from styo.profiles import DEFAULT_MODEL, PROFILES

_LOCAL = Path(sys.executable).parent / "styo"
STYO = str(_LOCAL) if _LOCAL.exists() else (shutil.which("styo") or "styo")

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "model_index.json").is_file(),
                                reason="models/styo-mini is not trained yet")


def test_stylize_runs_on_the_default_model_with_its_profile(tmp_path):
    from styo.book.experiments import score
    from styo.world.judges import load_judges
    from styo.world.render import render

    render(MINI_SOURCE, "photo", seed=0).save(tmp_path / "source.png")
    render(MINI_TARGET, "mosaic", seed=0).save(tmp_path / "target.png")
    out = tmp_path / "run"
    res = subprocess.run(
        [STYO, "stylize", "--source", tmp_path / "source.png", "--target", tmp_path / "target.png",
         "--out", out, "--steps", "30", "--aux", "4", "--sample-steps", "10", "--samples", "2",
         "--no-progress"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]

    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["defaults"]["profile"] == "mini"
    settings, chosen = record["settings"], record["defaults"]["chosen"]
    for key in ("lr", "guidance", "strength", "train_text_encoder"):
        assert settings[key] == chosen[key] == PROFILES["mini"][key], key
    assert settings["model"] is None and record["model"]["path_or_id"] == "default (miniature world)"
    assert record["model"]["image_size"] == 64

    pictures = [Image.open(out / name) for name in
                ("stylized.png", "stylized-1.png", "reconstruction.png", "reconstruction-1.png")]
    assert all(p.size == (64, 64) and p.mode == "RGB" for p in pictures)
    kept = score(load_judges(), pictures[2:], source_attributes=MINI_SOURCE)
    assert kept["pose"] == 1.0 and kept["content"] >= 0.6, kept
