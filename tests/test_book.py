"""The chapters' shared helpers: the backend switch, the example pair and the cached IDL run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from styo import book
from styo.testing import tiny_pipeline


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="mini, sd15, sd15-shaped, tiny"):
        book.backend_settings("sdxl")


def test_sd15_backend_reaches_from_pretrained_with_the_hub_id(monkeypatch):
    seen = {}

    def fake_from_pretrained(model, **kwargs):
        seen["model"], seen["kwargs"] = model, kwargs
        return tiny_pipeline()

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", fake_from_pretrained)
    pipe = book.load_backend("sd15", device="cpu")
    assert seen["model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert seen["kwargs"]["use_safetensors"] is True
    assert isinstance(pipe, StableDiffusionPipeline)


def test_mini_backend_is_the_shipped_folder():
    assert book.backend_settings("mini").model.endswith("models/styo-mini")


def test_book_and_command_line_share_each_profile():
    """A chapter's `strength = None` and `styo stylize` without --strength diffuse equally deep."""
    from styo.profiles import PROFILES

    for backend, profile in (("mini", "mini"), ("sd15", "sd")):
        settings = book.backend_settings(backend)
        assert settings.strength == PROFILES[profile]["strength"]
        assert (settings.idl.steps, settings.idl.lr) == (PROFILES[profile]["steps"], PROFILES[profile]["lr"])
        assert settings.idl.train_text_encoder is PROFILES[profile]["train_text_encoder"]
    assert book.backend_settings("mini").strength != book.backend_settings("sd15").strength


def test_mini_example_pair_is_rendered_with_known_attributes():
    pair = book.example_pair("mini")
    assert pair.source.size == pair.target.size == (64, 64)
    assert pair.target_style == "mosaic" and pair.source_attributes == book.MINI_SOURCE
    differing = [k for k in book.MINI_SOURCE if book.MINI_SOURCE[k] != book.MINI_TARGET[k]]
    assert len(differing) == len(book.MINI_SOURCE)  # every attribute differs: leaks are visible


def test_cached_idl_trains_once_then_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("STYO_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    from PIL import Image

    imgs = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]
    config = book.with_steps(book.backend_settings("mini").idl, 3)
    first_pipe = tiny_pipeline()
    seen = []
    first = book.cached_idl(first_pipe, imgs[0], imgs[1], imgs[2:], config, progress=False,
                            callback=lambda step, loss: seen.append((step, loss)))
    assert len(first.losses) == 3 and first.resumed_from == 0
    assert [loss for _, loss in seen] == first.losses
    second_pipe = tiny_pipeline()
    import styo.idl

    def no_training(*args, **kwargs):
        raise AssertionError("the cached run was trained again")

    monkeypatch.setattr(styo.idl, "draw_batch", no_training)
    second = book.cached_idl(second_pipe, imgs[0], imgs[1], imgs[2:], config, progress=False)
    assert second.losses == first.losses
    for a, b in zip(first_pipe.unet.parameters(), second_pipe.unet.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Another step count is another run, not the cached one.
    monkeypatch.undo()
    monkeypatch.setenv("STYO_CACHE", str(tmp_path))
    third = book.cached_idl(tiny_pipeline(), imgs[0], imgs[1], imgs[2:], book.with_steps(config, 2),
                            progress=False)
    assert len(third.losses) == 2
    assert len(list((tmp_path / "idl").iterdir())) == 2
    # Starting from an already fine-tuned pipe is another run too.
    book.cached_idl(first_pipe, imgs[0], imgs[1], imgs[2:], config, progress=False)
    assert len(list((tmp_path / "idl").iterdir())) == 3


def test_tiny_backend_runs_without_files():
    pipe = book.load_backend("tiny")
    pair = book.example_pair("tiny")
    assert pair.source.size == (16, 16)
    from styo.pipeline import image_size

    assert image_size(pipe) == 16


def test_sd15_without_a_gpu_stops_unless_the_reader_insists(monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained",
                        lambda model, **kw: calls.append(model) or tiny_pipeline())
    with pytest.raises(book.NeedsGPU, match="allow_cpu = True") as err:
        book.load_backend("sd15")
    assert "\n" not in str(err.value) and not calls  # stopped before any download
    assert isinstance(book.load_backend("sd15", allow_cpu=True), StableDiffusionPipeline)
    assert calls == [book.SD15]


def test_hub_downloads_take_the_fp16_variant_and_fall_back_without_one(monkeypatch):
    from styo.pipeline import load_pipeline

    seen = []

    def only_full_precision(model, **kwargs):
        seen.append(kwargs.get("variant"))
        if kwargs.get("variant"):
            raise ValueError("You are trying to load the model files of the `variant=fp16`, but no such "
                             "modeling files are available.")
        return tiny_pipeline()

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", only_full_precision)
    load_pipeline("someone/full-precision-only", device="cpu")
    assert seen == ["fp16", None]
    seen.clear()
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained",
                        lambda model, **kw: seen.append(kw.get("variant")) or tiny_pipeline())
    load_pipeline(book.SD15, device="cpu")
    assert seen == ["fp16"]


def test_sd15_example_pair_is_the_shipped_512_px_renders():
    import subprocess

    pair = book.example_pair("sd15")
    assert pair.source.size == pair.target.size == (512, 512)
    assert pair.source.mode == pair.target.mode == "RGB" and pair.source_attributes is None
    assert np.asarray(pair.source).std() > 10 and np.asarray(pair.source).tobytes() != np.asarray(pair.target).tobytes()
    tracked = subprocess.run(["git", "ls-files", *map(str, book.SD15_PAIR)], cwd=book.ROOT,
                             capture_output=True, text=True).stdout.split()
    assert len(tracked) in (0, 2)  # both committed together (0: a source tree without git data)


def test_readers_own_images_of_any_size_and_mode_become_an_unscored_pair(tmp_path, capsys):
    from PIL import Image

    from styo.data import ImageInputError

    wide = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 150, 4), dtype=np.uint8), "RGBA")
    wide.save(tmp_path / "face.png")
    Image.new("L", (40, 40), 128).save(tmp_path / "style.jpg")
    pair = book.example_pair("mini", source_path=tmp_path / "face.png", target_path=tmp_path / "style.jpg")
    assert pair.source.size == pair.target.size == (64, 64)
    assert pair.source.mode == pair.target.mode == "RGB"
    assert pair.source_attributes is None and pair.target_style is None  # nothing for the judges
    out = capsys.readouterr().out
    assert "centre-cropped the 150x90 image to 90x90" in out and "upscaled 40x40 to 64x64" in out
    half = book.example_pair("tiny", tiny_pipeline(), target_path=tmp_path / "style.jpg")
    assert half.target.size == half.source.size == (16, 16)
    assert half.source.tobytes() == book.example_pair("tiny").source.tobytes()
    with pytest.raises(ImageInputError):
        book.example_pair("mini", source_path=tmp_path / "missing.png")
    from styo.book import experiments as X

    pairs = X.ablation_pairs("mini", [1, 8], source_path=tmp_path / "face.png")
    assert list(pairs) == ["your pair"]
