"""The `styo world` command-line contract, through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import styo_in_process
from PIL import Image

from styo.world.attributes import ATTRIBUTES, HELD_OUT_STYLES, STYLES

STYO = shutil.which("styo") or str(Path(sys.executable).parent / "styo")


def styo(*args, check=False):
    return subprocess.run([STYO, *args], capture_output=True, text=True, check=check)


def test_styles_lists_every_style_and_marks_held_out():
    lines = styo("world", "styles", check=True).stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(STYLES)
    assert {line.split()[0] for line in lines if line.endswith("(held out)")} == set(HELD_OUT_STYLES)


def test_render_writes_png_and_json(tmp_path):
    out = tmp_path / "face.png"
    res = styo("world", "render", "--seed", "7", "--style", "pixel", "--set", "hair_colour=red",
               "--set", "glasses=glasses", "--out", str(out), "--json", check=True)
    meta = json.loads(res.stdout)
    assert meta["style"] == "pixel"
    assert meta["attributes"]["hair_colour"] == "red" and meta["attributes"]["glasses"] == "glasses"
    assert set(meta["attributes"]) == set(ATTRIBUTES)
    img = Image.open(out)
    assert img.size == (64, 64) and img.mode == "RGB"
    again = tmp_path / "again.png"
    styo("world", "render", "--seed", "7", "--style", "pixel", "--set", "hair_colour=red",
         "--set", "glasses=glasses", "--out", str(again), check=True)
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(again)))


def test_render_masks_are_one_png_per_region_matching_the_image(tmp_path):
    out, masks = tmp_path / "face.png", tmp_path / "masks"
    styo("world", "render", "--seed", "4", "--style", "cartoon", "--set", "glasses=glasses",
         "--layout", "varied", "--out", str(out), "--masks", str(masks), check=True)
    from styo.world.render import REGIONS

    assert sorted(p.name for p in masks.iterdir()) == sorted(f"{r}.png" for r in REGIONS)
    stack = np.stack([np.asarray(Image.open(masks / f"{r}.png")) for r in REGIONS])
    assert stack.shape[1:] == Image.open(out).size[::-1] and set(np.unique(stack)) <= {0, 255}
    assert (stack == 255).sum(0).min() == 1 == (stack == 255).sum(0).max()  # a partition
    hair = np.asarray(Image.open(out), np.float32)[stack[REGIONS.index("hair")] == 255].mean(0)
    sky = np.asarray(Image.open(out), np.float32)[stack[REGIONS.index("background")] == 255].mean(0)
    assert np.abs(hair - sky).sum() > 30  # the masks cover different things
    again = styo("world", "render", "--seed", "4", "--out", str(tmp_path / "b.png"),
                 "--masks", str(masks))
    assert again.returncode == 2 and "--masks" in again.stderr and "not empty" in again.stderr


def test_judge_masks_writes_a_folder_per_file(tmp_path):
    files = []
    for seed in (1, 2):
        files.append(tmp_path / f"p{seed}.png")
        styo("world", "render", "--seed", str(seed), "--out", str(files[-1]), check=True)
    masks = tmp_path / "masks"
    styo("world", "judge", *map(str, files), "--masks", str(masks), check=True)
    from styo.world.render import REGIONS

    for f in files:
        names = sorted(p.name for p in (masks / f.stem).iterdir())
        assert names == sorted(f"{r}.png" for r in REGIONS)
        face = np.asarray(Image.open(masks / f.stem / "face.png"))
        assert face.shape == (64, 64) and face.max() == 255


def test_bad_style_attribute_value_exit_2_with_valid_list(tmp_path):
    cases = [
        (["--style", "cubism"], "photo, sketch"),
        (["--set", "hat=red"], "face_shape"),
        (["--set", "hair_colour=green"], "black, blonde"),
    ]
    for extra, listed in cases:
        res = styo_in_process("world", "render", "--seed", "1", *extra, "--out", str(tmp_path / "x.png"))
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and listed in res.stderr
        assert not (tmp_path / "x.png").exists()


def test_render_never_overwrites(tmp_path):
    out = tmp_path / "mine.png"
    out.write_bytes(b"precious")
    res = styo_in_process("world", "render", "--seed", "1", "--out", str(out))
    assert res.returncode == 2 and "exists" in res.stderr
    assert out.read_bytes() == b"precious"


def test_snapshot_of_a_run_without_checkpoints_is_a_usage_error(tmp_path):
    res = styo_in_process("world", "snapshot", "--work-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "snap"))
    assert res.returncode == 2
    assert "no finished VAE and UNet checkpoint" in res.stderr and "--work-dir" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "snap").exists()


def test_pretrain_with_a_folder_that_is_no_vae_is_a_usage_error(tmp_path):
    res = styo_in_process("world", "pretrain", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
               "--vae", str(tmp_path))
    assert res.returncode == 2 and "save_pretrained" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value, says", [
    ("--people", "33", "--people must be 0 to 32"), ("--people-share", "1", "--people-share must be"),
    ("--people-images", "0", "--people-images must be positive"), ("--name-lr", "0", "--name-lr must be positive")])
def test_pretrain_with_a_cast_it_cannot_draw_is_a_usage_error(tmp_path, flag, value, says):
    res = styo_in_process("world", "pretrain", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
                          flag, value)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("flags, says", [
    (["--threshold-at-picture"], "--threshold-at-picture scores the threshold loss: give --threshold-weight too"),
    (["--threshold-weight", "1", "--threshold-temperature", "0"], "--threshold-temperature must be positive"),
    (["--threshold-region-weight", "eyes=4"], "--threshold-region-weight weights the threshold loss: give --threshold-weight too"),
    (["--threshold-weight", "1", "--threshold-region-weight", "nose=4"], "REGION one of hair eyes mouth"),
    (["--threshold-weight", "1", "--threshold-region-weight", "eyes=-1"], "and W >= 0, got 'eyes=-1'"),
    (["--threshold-weight", "1", "--threshold-region-weight", "eyes"], "got 'eyes'"),
    (["--threshold-word-weight", "closed=8"], "--threshold-word-weight weights the threshold loss: give --threshold-weight too"),
    (["--threshold-weight", "1", "--threshold-word-weight", "photo=8"], "WORD a word captions ground"),
    (["--threshold-weight", "1", "--threshold-word-weight", "closed=x"], "and W >= 0, got 'closed=x'")])
def test_pretrain_with_a_threshold_loss_it_cannot_score_is_a_usage_error(tmp_path, flags, says):
    res = styo_in_process("world", "pretrain", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
                          *flags)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("flags, says", [
    (["--train-only", "attn2.to_q"], "--train-only continues a finished model: give --init-from too"),
    (["--init-from", "models/styo-mini", "--train-only", "attn3.to_q"],
     "--train-only: no UNet parameter name holds 'attn3.to_q'")])
def test_pretrain_training_only_what_it_cannot_is_a_usage_error(tmp_path, flags, says):
    res = styo_in_process("world", "pretrain", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
                          *flags)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_evaluate_writes_metrics_with_per_image_records_and_a_sample_grid(tmp_path):
    from styo.testing import tiny_pipeline

    model = tmp_path / "model"
    tiny_pipeline(0).save_pretrained(model, safe_serialization=True)
    out = tmp_path / "eval"
    r = styo("world", "evaluate", "--model", str(model), "--out", str(out), "--n", "5", "--steps", "2",
             "--n-train", "100")
    assert r.returncode == 0, r.stderr
    assert "per captioned style" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 5 and metrics["n_train"] == 100 and len(metrics["per_image"]) == 5
    assert metrics["style_accuracy"] == sum(r["style_correct"] for r in metrics["per_image"]) / 5
    assert set(metrics["codec"]["per_style"]) >= {"photo", "mosaic"}
    assert Image.open(out / "samples.png").size[0] > 0
    again = styo("world", "evaluate", "--model", str(model), "--out", str(out), "--n", "5")
    assert again.returncode == 2 and "not empty" in again.stderr


def test_grounding_writes_word_map_figures_and_a_sample_grid(tmp_path):
    from styo.profiles import DEFAULT_MODEL

    out = tmp_path / "grounding"
    r = styo("world", "grounding", "--model", str(DEFAULT_MODEL), "--out", str(out), "--n", "2",
             "--steps", "2", "--n-train", "100")
    assert r.returncode == 0, r.stderr
    assert "word-map mIoU" in r.stdout and "padding mass" in r.stdout
    record = json.loads((out / "grounding.json").read_text())
    assert record["n"] == 2 and len(record["per_image"]) == 2 and "images" not in record
    assert set(record["ceiling_per_target"]) == set(record["miou_per_target"])
    assert Image.open(out / "samples.png").size[0] > 0
    again = styo("world", "grounding", "--model", str(DEFAULT_MODEL), "--out", str(out), "--n", "2")
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = styo("world", "grounding", "--model", str(DEFAULT_MODEL), "--out", str(tmp_path / "b"),
               "--steps", "0")
    assert bad.returncode == 2 and "must be positive" in bad.stderr
