"""A model's profile comes from its folder (styo.json), not from where the folder lies."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from styo.profiles import DEFAULT_MODEL, PROFILE_FILE, PROFILES, profile_of


def test_a_copy_of_the_miniature_model_elsewhere_is_still_mini(tmp_path):
    copy = tmp_path / "somewhere" / "my-model"
    shutil.copytree(DEFAULT_MODEL, copy)
    assert copy.resolve() != DEFAULT_MODEL.resolve()
    assert profile_of(copy) == profile_of(str(copy)) == profile_of(None) == "mini"
    (copy / PROFILE_FILE).unlink()
    assert profile_of(copy) == "sd"  # without the file: Stable Diffusion's settings


def test_folders_without_a_known_profile_and_hub_ids_are_sd(tmp_path):
    assert profile_of("stable-diffusion-v1-5/stable-diffusion-v1-5") == "sd"
    (tmp_path / "model_index.json").write_text("{}")
    assert profile_of(tmp_path) == "sd"
    for content in ('{"profile": "sd-t4"}', '{"profile": "nonsense"}', "not json", "[1, 2]"):
        (tmp_path / PROFILE_FILE).write_text(content)
        assert profile_of(tmp_path) == ("sd-t4" if "sd-t4" in content else "sd"), content
    assert set(PROFILES) >= {"mini", "sd", "sd-t4"}


def test_a_fine_tuned_pipeline_keeps_its_base_models_profile(tmp_path):
    from styo.idl import IDLConfig, train
    from styo.pipeline import load_pipeline
    from styo.testing import TINY_IMAGE_SIZE, tiny_pipeline

    base = tmp_path / "base"
    tiny_pipeline().save_pretrained(base, safe_serialization=True)
    (base / PROFILE_FILE).write_text(json.dumps({"profile": "mini"}))
    pipe = load_pipeline(base, device="cpu")
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (TINY_IMAGE_SIZE,) * 2 + (3,), dtype=np.uint8))
            for _ in range(3)]
    result = train(pipe, imgs[0], imgs[1], imgs[2:], IDLConfig(steps=1, checkpoint_every=0),
                   output_dir=tmp_path / "run", progress=False)
    assert profile_of(result.pipeline_dir) == "mini"
