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


def test_the_papers_settings_are_the_methods_defaults():
    # One source: the "sd" profile is what IDLConfig, stylize and generate_with_attention default to,
    # so changing the paper's settings in one place changes them everywhere.
    import inspect

    from styo.fcc import stylize
    from styo.generate import generate_with_attention
    from styo.idl import IDLConfig
    from styo.profiles import PROFILES

    sd = PROFILES["sd"]
    assert (IDLConfig().steps, IDLConfig().lr) == (sd["steps"], sd["lr"])
    for fn in (stylize, generate_with_attention):
        params = inspect.signature(fn).parameters
        assert params["num_inference_steps"].default == sd["sample_steps"]
        assert params["guidance_scale"].default == sd["guidance"]
    assert inspect.signature(stylize).parameters["strength"].default == sd["strength"]


def test_no_dependency_is_declared_that_nothing_imports():
    # Each runtime dependency of pyproject.toml is imported somewhere in the package, the tests,
    # the benchmarks or the chapters (by its import name).
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = [re.match(r'\s*"([A-Za-z0-9_.-]+)', line).group(1).lower()
             for line in block.splitlines() if line.strip().startswith('"')]
    import_name = {"pillow": "PIL", "scikit-image": "skimage"}
    sources = "\n".join(p.read_text() for d in ("styo", "tests", "benchmarks", "book")
                        for p in (root / d).rglob("*") if p.suffix in (".py", ".ipynb"))
    for name in names:
        module = import_name.get(name, name.replace("-", "_"))
        assert re.search(rf"(import|from)\s+{re.escape(module)}\b", sources), name
