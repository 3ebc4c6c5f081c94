"""Image validation (bad input, library side) and the auxiliary set."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from styo.data import (
    ImageInputError,
    generate_aux,
    image_to_tensor,
    load_aux_folder,
    load_image,
)
from styo.testing import tiny_pipeline

SIZE = 16


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _write(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, **kw)
    return path


def _error(path, size=SIZE) -> str:
    with pytest.raises(ImageInputError) as info:
        load_image(path, size)
    assert str(path) in str(info.value)
    return str(info.value)


def test_missing_file_and_directory(tmp_path):
    assert "file not found" in _error(tmp_path / "nope.png")
    assert "directory" in _error(tmp_path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("this is not an image")
    msg = _error(path)
    assert "not a readable image" in msg and "PNG" in msg


def test_truncated_png(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(noise))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _error(path)


@pytest.mark.parametrize(
    "mode, make, expect",
    [
        ("L", lambda: Image.new("L", (SIZE, SIZE), 100), (100, 100, 100)),
        ("1", lambda: Image.new("1", (SIZE, SIZE), 1), (255, 255, 255)),
        ("P", lambda: Image.new("RGB", (SIZE, SIZE), (10, 200, 30)).quantize(4), (10, 200, 30)),
        ("CMYK", lambda: Image.new("CMYK", (SIZE, SIZE), (0, 0, 0, 0)), (255, 255, 255)),
    ],
)
def test_modes_convert_to_rgb(tmp_path, mode, make, expect):
    path = _write(tmp_path / f"m.{'jpg' if mode == 'CMYK' else 'png'}", make())
    notices: list[str] = []
    img = load_image(path, SIZE, notices=notices)
    assert img.mode == "RGB" and img.size == (SIZE, SIZE)
    assert np.abs(np.asarray(img)[4, 4].astype(int) - expect).max() <= 2
    assert any("RGB" in n for n in notices)


def test_rgba_and_palette_transparency_composite_on_white(tmp_path):
    rgba = Image.new("RGBA", (SIZE, SIZE), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    notices: list[str] = []
    img = load_image(_write(tmp_path / "a.png", rgba), SIZE, notices=notices)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((5, 5)) == (255, 0, 0)
    assert any("transparent" in n for n in notices)
    pal = rgba.convert("P")  # palette with a transparent entry
    pal.info["transparency"] = pal.getpixel((0, 0))
    img = load_image(_write(tmp_path / "p.png", pal, transparency=pal.getpixel((0, 0))), SIZE)
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_high_bit_depth_scaled_not_clipped(tmp_path):
    ramp = np.zeros((SIZE, SIZE), dtype=np.uint16)
    ramp[:, SIZE // 2 :] = 65535
    ramp[0, 0] = 32896  # mid grey in 16 bits
    path16 = _write(tmp_path / "g16.png", Image.fromarray(ramp))
    assert Image.open(path16).mode == "I;16"
    notices: list[str] = []
    img = np.asarray(load_image(path16, SIZE, notices=notices))
    assert img[1, 1].tolist() == [0, 0, 0] and img[1, -1].tolist() == [255, 255, 255]
    assert img[0, 0, 0] == 128
    assert any("high-bit-depth" in n for n in notices)
    path32 = _write(tmp_path / "g32.tif", Image.fromarray(ramp.astype(np.int32), "I"))
    assert Image.open(path32).mode == "I"
    assert np.asarray(load_image(path32, SIZE))[1, -1].tolist() == [255, 255, 255]


def test_non_square_is_centre_cropped_and_resized(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, 10:30] = 255  # the central 20x20 square is white, the sides black
    notices: list[str] = []
    img = load_image(_write(tmp_path / "wide.png", Image.fromarray(arr)), SIZE, notices=notices)
    assert img.size == (SIZE, SIZE) and np.asarray(img).min() >= 250
    assert any("centre-cropped the 40x20 image to 20x20" in n for n in notices)
    assert any("downscaled 20x20 to 16x16" in n for n in notices)


def test_small_image_upscaled_tiny_refused(tmp_path):
    notices: list[str] = []
    img = load_image(
        _write(tmp_path / "s.png", Image.new("RGB", (8, 8), "red")), SIZE, notices=notices
    )
    assert img.size == (SIZE, SIZE) and any("upscaled 8x8" in n for n in notices)
    assert "too small" in _error(_write(tmp_path / "t.png", Image.new("RGB", (4, 4))))


def test_absurd_sizes_refused(tmp_path):
    assert "aspect ratio" in _error(_write(tmp_path / "strip.png", Image.new("RGB", (3000, 10))))
    huge = _write(tmp_path / "huge.png", Image.new("1", (8200, 8200)))  # 1 bit/px: small file
    assert "too large" in _error(huge)


def test_exif_rotation_and_gif_frames(tmp_path):
    arr = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    arr[0, :] = (255, 0, 0)  # red top row
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    notices: list[str] = []
    path = _write(tmp_path / "phone.png", Image.fromarray(arr), exif=exif)
    img = np.asarray(load_image(path, SIZE, notices=notices))
    assert img[:, -1, 0].min() == 255 and img[0, 0, 0] == 0  # the red row is now the right column
    assert any("EXIF" in n for n in notices)
    frames = [Image.new("RGB", (SIZE, SIZE), c) for c in ("red", "blue")]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    notices = []
    assert load_image(gif, SIZE, notices=notices).getpixel((3, 3))[0] > 200
    assert any("first of its 2 frames" in n for n in notices)


def test_inputs_byte_identical_after_loading(tmp_path):
    files = [
        _write(tmp_path / "a.png", Image.new("RGBA", (30, 20), (1, 2, 3, 4))),
        _write(tmp_path / "b.jpg", Image.new("RGB", (64, 64), "green")),
        _write(tmp_path / "c.png", Image.fromarray(np.full((9, 9), 999, np.uint16))),
    ]
    before = {f: (_digest(f), f.stat().st_mtime_ns) for f in files}
    for f in files:
        load_image(f, SIZE)
    load_aux_folder(tmp_path, SIZE)
    assert before == {f: (_digest(f), f.stat().st_mtime_ns) for f in files}


def test_image_to_tensor_range_and_layout():
    img = Image.new("RGB", (4, 2), (255, 0, 0))
    x = image_to_tensor(img)
    assert x.shape == (3, 2, 4) and x.dtype == torch.float32
    assert x[0].eq(1).all() and x[1].eq(-1).all()


def test_aux_folder(tmp_path):
    for name, colour in [("b.png", "blue"), ("a.jpg", "red"), ("c.webp", "green")]:
        _write(tmp_path / name, Image.new("RGB", (20, 20), colour))
    (tmp_path / "notes.txt").write_text("ignored")
    _write(tmp_path / ".hidden.png", Image.new("RGB", (20, 20)))
    imgs = load_aux_folder(tmp_path, SIZE)
    assert [im.getpixel((8, 8)).index(max(im.getpixel((8, 8)))) for im in imgs] == [0, 2, 1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError, match="no images"):
        load_aux_folder(tmp_path / "empty", SIZE)
    with pytest.raises(ImageInputError, match="folder not found"):
        load_aux_folder(tmp_path / "missing", SIZE)
    (tmp_path / "d.png").write_text("broken")
    with pytest.raises(ImageInputError, match="d.png"):
        load_aux_folder(tmp_path, SIZE)


def test_generate_aux_caches_and_extends(tmp_path, monkeypatch):
    pipe = tiny_pipeline(0)
    calls: list[int] = []
    original = StableDiffusionPipeline.__call__

    def counting(self, *args, **kwargs):
        calls.append(len(kwargs["prompt"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", counting)
    kw = dict(cache_dir=tmp_path, seed=3, batch_size=2, num_inference_steps=2)
    first = generate_aux(pipe, 3, **kw)
    assert calls == [2, 1] and all(im.size == (SIZE, SIZE) and im.mode == "RGB" for im in first)
    again = generate_aux(pipe, 3, **kw)
    assert calls == [2, 1], "the second call must load the cache, not generate"
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again, strict=True)
    )
    more = generate_aux(pipe, 4, **kw)
    assert calls == [2, 1, 1] and len(more) == 4
    generate_aux(pipe, 1, **{**kw, "seed": 4})
    generate_aux(tiny_pipeline(1), 1, **kw)
    assert calls == [2, 1, 1, 1, 1], "another seed or model must not hit the cache"
    assert len(list(tmp_path.glob("aux-*"))) == 3


def test_fingerprint_tells_apart_models_that_differ_in_one_word():
    """An edit in the manner of textual inversion changes a few rows of the token embedding table
    and leaves every tensor's first values alone; the fingerprint, which keys every cache, must
    still tell the two models apart (or a cached run of one would be served for the other), and
    must not change when nothing did."""
    from styo.data import model_fingerprint

    pipe = tiny_pipeline(0)
    before = model_fingerprint(pipe)
    assert model_fingerprint(tiny_pipeline(0)) == before
    table = pipe.text_encoder.get_input_embeddings().weight
    word = pipe.tokenizer.convert_tokens_to_ids("portrait</w>")
    assert word > 0, "the edited row must not be the table's first, whose values the heads already read"
    kept = table[word, -1].item()
    with torch.no_grad():
        table[word, -1] += 0.5
    assert model_fingerprint(pipe) != before
    assert model_fingerprint(pipe, values=("unet", "vae")) == model_fingerprint(tiny_pipeline(0), values=("unet", "vae"))
    with torch.no_grad():
        table[word, -1] = kept
    assert model_fingerprint(pipe) == before
