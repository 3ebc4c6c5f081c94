"""Stage 2c: the decoder fine-tuned on the face's small parts, the encoder and the input untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import styo_in_process
from diffusers import AutoencoderKL

from styo.world import architecture as arch
from styo.world import decoder_detail as dd
from styo.world.render import REGIONS

TINY = dict(steps=4, batch=4, images=8, checkpoint_every=2)


def test_part_weights_cover_the_small_parts_and_their_neighbours():
    regions = torch.full((1, 8, 8), REGIONS.index("face"), dtype=torch.uint8)
    regions[0, 4, 3] = REGIONS.index("eyes")
    regions[0, 0, 7] = REGIONS.index("hair")
    w = dd.part_weights(regions, 30.0)
    assert w.shape == (1, 1, 8, 8)
    near = torch.zeros(8, 8, dtype=torch.bool)
    near[3:6, 2:5] = True  # the eye pixel and its eight neighbours
    assert (w[0, 0][near] == 31).all() and (w[0, 0][~near] == 1).all()
    assert (dd.part_weights(regions, 0.0) == 1).all()


@pytest.mark.parametrize("bad", [dict(steps=0), dict(images=2, batch=4), dict(part_weight=-1), dict(lr=0)])
def test_config_refuses_what_cannot_train(bad):
    with pytest.raises(ValueError):
        dd.DecoderDetailConfig(**bad)


def _model(folder: Path) -> Path:
    torch.manual_seed(0)
    arch.build_vae().save_pretrained(folder / "vae", safe_serialization=True)
    (folder / "unet").mkdir()
    (folder / "unet" / "weights.txt").write_text("the UNet, copied as it is")
    (folder / "training.json").write_text(json.dumps({"config": {"unet_steps": 7}}))
    (folder / "metrics.json").write_text("{}")  # measured on the old decoder's pictures
    return folder


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_sharpened_model_keeps_its_encoder_and_resumes_to_the_same_decoder(tmp_path, monkeypatch):
    model = _model(tmp_path / "model")
    before = _digest(model)
    cfg = dd.DecoderDetailConfig(**TINY)
    dd.sharpen_decoder(model, tmp_path / "out", tmp_path / "work", cfg)
    assert _digest(model) == before  # the input is never modified
    old = AutoencoderKL.from_pretrained(model / "vae").state_dict()
    new = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae").state_dict()
    frozen = [k for k in old if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(old[k], new[k]) for k in frozen)  # same latents, same UNet
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("decoder."))
    assert (tmp_path / "out" / "unet" / "weights.txt").is_file()
    assert not (tmp_path / "out" / "metrics.json").exists()  # stale once the decoder changes
    assert "_name_or_path" not in json.loads((tmp_path / "out" / "vae" / "config.json").read_text())
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert record["config"] == {"unet_steps": 7} and record["decoder_detail"]["config"]["steps"] == 4

    real_loss, calls = dd.detail_loss, []

    def killed_at_step_three(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # after the step-2 checkpoint
        return real_loss(*args)

    monkeypatch.setattr(dd, "detail_loss", killed_at_step_three)
    with pytest.raises(KeyboardInterrupt):
        dd.sharpen_decoder(model, tmp_path / "resumed", tmp_path / "work2", cfg)
    monkeypatch.setattr(dd, "detail_loss", real_loss)
    dd.sharpen_decoder(model, tmp_path / "resumed", tmp_path / "work2", cfg)
    resumed = AutoencoderKL.from_pretrained(tmp_path / "resumed" / "vae").state_dict()
    for name, tensor in new.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    # a work dir resumes only the recipe it was started with
    with pytest.raises(ValueError, match="another recipe.*--work-dir"):
        dd.sharpen_decoder(model, tmp_path / "other", tmp_path / "work2", dd.DecoderDetailConfig(**{**TINY, "steps": 6}))
    assert not (tmp_path / "other").exists()


def test_cli_refuses_a_folder_without_a_vae_and_an_existing_out(tmp_path):
    res = styo_in_process("world", "sharpen-decoder", str(tmp_path), "--out", str(tmp_path / "o"),
                          "--work-dir", str(tmp_path / "w"))
    assert res.returncode == 2 and "no vae/ folder" in res.stderr and "Traceback" not in res.stderr
    res = styo_in_process("world", "sharpen-decoder", str(tmp_path), "--out", str(tmp_path),
                          "--work-dir", str(tmp_path / "w"))
    assert res.returncode == 2 and "already exists" in res.stderr
    (tmp_path / "vae").mkdir()
    res = styo_in_process("world", "sharpen-decoder", str(tmp_path), "--out", str(tmp_path / "o"),
                          "--work-dir", str(tmp_path / "w"), "--steps", "0")
    assert res.returncode == 2 and "steps" in res.stderr and not (tmp_path / "o").exists()
