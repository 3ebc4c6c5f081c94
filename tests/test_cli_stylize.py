"""`styo stylize` through the installed console script: the output contract, determinism,
interrupt and resume, and every kind of bad input.

The inputs are made once per module: the tiny random pipeline saved as a model folder, and images
in every awkward format. The runs are started together (each is mostly interpreter start-up, so
three at a time use the two cores better than one) and many tests read the same results. Every
test also checks that no input file changed by a single byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import styo_in_process
from PIL import Image

_LOCAL = Path(sys.executable).parent / "styo"
STYO = str(_LOCAL) if _LOCAL.exists() else (shutil.which("styo") or "styo")
# One thread: tiny models run faster so, and the machine is shared. Offline: tests never reach
# the hub, and the hub-id case must say so.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
STEPS = 40
FAST = ["--steps", str(STEPS), "--sample-steps", "4", "--seed", "3", "--no-progress"]
LONG_ID = "0" * 30  # CLIP splits digits: 30 tokens, three times in the n_s=3 prompt
Result = subprocess.CompletedProcess


def styo(*args: object, cwd: Path | None = None) -> Result:
    return subprocess.run(
        [STYO, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600
    )


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _smooth(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A blurry random picture: something the tiny VAE can encode."""
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def make_inputs(root: Path) -> None:
    """Model folder and images; the model's side is 16 px."""
    from styo.testing import tiny_pipeline

    tiny_pipeline(0).save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    grey16 = np.asarray(_smooth(rng, 20, 24).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(root / "source.png")  # 16-bit grey, 24x20: crop and resize
    target = _smooth(rng, 12, 12).convert("RGBA")
    target.putalpha(200)
    target.save(root / "target.png")  # transparent and smaller than 16 px
    aux = root / "aux"
    aux.mkdir()
    _smooth(rng, 16, 16).convert("P").save(aux / "palette.png")
    _smooth(rng, 16, 16).convert("L").save(aux / "grey.png")
    _smooth(rng, 40, 40).save(aux / "big.png")
    (root / "notes.txt").write_text("not an image\n")
    buf = io.BytesIO()
    _smooth(rng, 16, 16).save(buf, format="PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _smooth(rng, 4, 4).save(root / "tiny.png")
    Image.new("1", (8200, 2100)).save(root / "huge.png")
    (root / "not-a-pipeline").mkdir()
    (root / "not-a-pipeline" / "config.json").write_text("{}\n")


class World:
    """Paths of the inputs and the runs, the checksums of the inputs, and the results."""

    def __init__(self, root: Path, runs: Path) -> None:
        self.root, self.runs = root, runs
        self.before = checksums(root)
        self.results: dict[str, Result | list[Result]] = {}

    def args(self, out: str, *extra: object, **files: str) -> list[object]:
        """The main run's arguments (awkward images, an aux folder, one common-word identifier);
        ``files`` replace source/target/aux-dir/model by input name."""
        f = {"source": "source.png", "target": "target.png", "aux_dir": "aux", "model": "model"}
        f.update(files)
        return [
            "stylize",
            "--source", self.root / f["source"],
            "--target", self.root / f["target"],
            "--aux-dir", self.root / f["aux_dir"],
            "--model", self.root / f["model"],
            "--identifiers", "ak47", "aug", "face", "m4a1",
            "--samples", "2",
            *FAST,
            "--out", self.runs / out,
            *extra,
        ]  # fmt: skip

    def assert_inputs_unchanged(self) -> None:
        assert checksums(self.root) == self.before


def interrupt_then_resume(world: World) -> list[Result]:
    """Ctrl-C once the first IDL checkpoint exists, then --resume: [interrupted, resumed]."""
    args = world.args("interrupted", "--checkpoint-every", "10")
    proc = subprocess.Popen(
        [STYO, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    checkpoints = world.runs / "interrupted" / "idl" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("step-*/state.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no IDL checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    first = Result(proc.args, proc.returncode, out, err)
    return [first, styo(*args, "--resume")]


def main_then_again(world: World) -> list[Result]:
    """The main run; then the same --out without --resume; then --resume with another n_s."""
    main = styo(*world.args("main"))
    before = checksums(world.runs / "main")
    again = styo(*world.args("main"))
    other = styo(*world.args("main", "--resume", "--n-s", "2"))
    assert checksums(world.runs / "main") == before, "a refused run changed the folder"
    return [main, again, other]


def bad_cases(world: World) -> dict[str, list[object]]:
    """Commands that must fail, by name."""
    return {  # the slow ones (a model load each) first, so the quick ones fill the gaps
        "not_a_pipeline": world.args("x14", model="not-a-pipeline"),
        "hub_offline": _hub_args(world),
        "too_long": [  # the later --identifiers wins
            *world.args("x16"),
            "--identifiers", "ak47", LONG_ID, "sks", "m4a1",
        ],
        "missing": world.args("x1", source="no-such-face.png"),
        "directory": world.args("x2", target="aux"),
        "text": world.args("x3", source="notes.txt"),
        "truncated": world.args("x4", target="truncated.png"),
        "too_small": world.args("x5", source="tiny.png"),
        "too_large": world.args("x6", target="huge.png"),
        "n_s_0": world.args("x7", "--n-s", "0"),
        "n_s_6": world.args("x8", "--n-s", "6"),
        "n_c_9": world.args("x9", "--n-c", "9"),
        "steps_0": world.args("x10", "--steps", "0"),
        "steps_negative": world.args("x11", "--steps", "-5"),
        "aux_dir_missing": world.args("x12", aux_dir="no-such-folder"),
        "cuda": world.args("x13", "--device", "cuda"),
        "usage": ["stylize", "--source", world.root / "source.png"],
        "existing": world.args("existing"),
        "input_in_out": _input_in_out(world),
        "out_inside_run": world.args("existing/idl-copy"),
    }  # fmt: skip


def _input_in_out(world: World) -> list[object]:
    """--source is a file named like an output, inside --out: refused even with --resume."""
    existing = world.runs / "existing"
    return [
        "stylize",
        "--source", existing / "stylized.png",
        "--target", world.root / "target.png",
        "--out", existing,
        "--resume",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root, runs = tmp_path_factory.mktemp("inputs"), tmp_path_factory.mktemp("runs")
    make_inputs(root)
    w = World(root, runs)
    existing = runs / "existing"  # a folder that holds (what looks like) an earlier run
    existing.mkdir()
    (existing / "run.json").write_text('{"status": "finished"}\n')
    Image.new("RGB", (16, 16), (200, 10, 10)).save(existing / "stylized.png")
    w.existing_before = checksums(existing)
    cases = bad_cases(w)
    jobs: dict[str, Callable[[], object]] = {
        "interrupt": lambda: interrupt_then_resume(w),
        "main": lambda: main_then_again(w),
        "repeat": lambda: styo(*w.args("repeat")),
    }
    # The hub case needs HF_HUB_OFFLINE set before huggingface_hub is imported: its own process.
    hub = cases.pop("hub_offline")
    jobs["hub_offline"] = lambda: styo(*hub, cwd=runs)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        w.results = {name: f.result() for name, f in futures.items()}
    for name, args in cases.items():  # after the pool: these change the working directory
        w.results[name] = styo_in_process(*args, cwd=runs)
    return w


def _hub_args(world: World) -> list[object]:
    """A hub id, not a local folder (the command runs in the runs folder, which has no such)."""
    args = world.args("x15")
    i = args.index("--model")
    args[i + 1] = "someone/some-model"
    return args


def one_error_line(res: Result, code: int) -> str:
    """The failure is exit ``code`` with exactly one plain line on stderr, no traceback."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, res.stderr
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("styo: error: ") and "Traceback" not in res.stderr
    return lines[0]


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


# --- a successful run ----------------------------------------------------------------------------


def test_run_writes_the_contract_files(world):
    main = world.results["main"][0]
    assert main.returncode == 0, main.stderr
    out = world.runs / "main"
    assert set(pngs(out)) == {
        "stylized.png", "stylized-1.png", "reconstruction.png", "reconstruction-1.png"
    }
    for data in pngs(out).values():
        img = Image.open(io.BytesIO(data))
        assert img.size == (16, 16) and img.mode == "RGB"
    assert list((out / "idl" / "pipeline").glob("model_index.json"))
    assert "stylized.png" in main.stdout
    world.assert_inputs_unchanged()


def test_run_json_records_everything(world):
    record = json.loads((world.runs / "main" / "run.json").read_text())
    assert record["status"] == "finished"
    s = record["settings"]
    assert (s["steps"], s["n_s"], s["n_c"], s["seed"], s["samples"]) == (STEPS, 3, 1, 3, 2)
    assert s["fcc"] and s["prompts"] == "contrastive" and s["identifiers"][2] == "face"
    # not the miniature model, so the paper's SD learning rate, and the record says so
    assert record["defaults"]["profile"] == "sd" and record["defaults"]["chosen"]["lr"] == 1e-6
    assert s["lr"] == 1e-6 and s["guidance"] == 7.5
    assert len(record["idl"]["losses"]) == STEPS and set(record["idl"]["terms"]) == {
        "source", "target", "aux"
    }
    assert all(np.isfinite(record["idl"]["losses"]))
    assert {"torch", "diffusers", "transformers", "styo"} <= set(record["versions"])
    assert {"load", "aux", "idl", "fcc", "total"} <= set(record["timings_s"])
    assert record["outputs"]["stylized"] == ["stylized.png", "stylized-1.png"]
    assert record["inputs"]["source"]["sha256"] == world.before["source.png"]
    assert record["prompts"]["FCC stylization"].count("aug not ak47") == 3
    assert any("face" in w for w in record["warnings"])
    assert len(record["notices"]) == 8


def test_awkward_images_are_converted_with_notices(world):
    err = world.results["main"][0].stderr
    for expected in (
        "source.png: reduced the I;16 high-bit-depth image to 8-bit RGB",
        "source.png: centre-cropped the 24x20 image to 20x20",
        "source.png: downscaled 20x20 to 16x16",
        "target.png: composited the transparent RGBA image on white",
        "target.png: upscaled 12x12 to 16x16",
        "palette.png: converted the P image to RGB",
        "grey.png: converted the L image to RGB",
        "big.png: downscaled 40x40 to 16x16",
    ):
        assert f"styo: notice: {expected}" in err
    world.assert_inputs_unchanged()


def test_common_word_identifier_warns_and_continues(world):
    main = world.results["main"][0]
    assert main.returncode == 0
    assert re.search(r"styo: warning: identifier 'face' is an ordinary word", main.stderr)


def test_same_arguments_give_identical_images(world):
    assert world.results["repeat"].returncode == 0, world.results["repeat"].stderr
    main, repeat = pngs(world.runs / "main"), pngs(world.runs / "repeat")
    assert main and main == repeat


# --- interrupt and resume ----------------------------------------------------------------------


def test_ctrl_c_leaves_a_checkpoint_and_resume_finishes_identically(world):
    stopped, resumed = world.results["interrupt"]
    assert stopped.returncode == 130, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    found = re.fullmatch(
        rf"styo: interrupted: IDL stopped at step (\d+) of {STEPS}; checkpoint saved in "
        r"\S+step-(\d+)\. Run the same command with --resume to finish",
        last,
    )
    assert found and found[1] == str(int(found[2])), last
    assert "Traceback" not in stopped.stderr
    step = int(found[1])
    assert 0 < step < STEPS
    out = world.runs / "interrupted"
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["idl"]["resumed_from"] == step
    main = json.loads((world.runs / "main" / "run.json").read_text())
    assert record["idl"]["losses"] == main["idl"]["losses"]
    assert pngs(out) == pngs(world.runs / "main")
    world.assert_inputs_unchanged()


# --- bad input ---------------------------------------------------------------------------------

BAD = {
    # name: (exit code, the problem, the fix)
    "missing": (2, "no-such-face.png: file not found", "pass an existing image file"),
    "directory": (2, "aux: is a directory, not an image file", "Pass one image file"),
    "text": (2, "notes.txt: not a readable image", "Pass an image file (PNG"),
    "truncated": (2, "truncated.png: image data is truncated or corrupt", "Re-export"),
    "too_small": (2, "is 4x4 px, too small", "Use a larger picture"),
    "too_large": (2, "is 8200x2100 px, too large", "Downscale it"),
    "n_s_0": (2, "--n-s must be from 1 to 5", "got 0"),
    "n_s_6": (2, "--n-s must be from 1 to 5", "got 6"),
    "n_c_9": (2, "--n-c must be from 1 to 5", "got 9"),
    "steps_0": (2, "--steps must be a positive number of IDL training steps", "got 0"),
    "steps_negative": (2, "--steps must be a positive number", "got -5"),
    "aux_dir_missing": (2, "--aux-dir", "folder not found. Pass a folder of portrait images"),
    "usage": (2, "the following arguments are required: --target, --out", "--help"),
    "not_a_pipeline": (2, "is not a diffusers pipeline folder", "Pass such a folder"),
    "hub_offline": (1, "the Hub is offline here", "pass that folder with --model DIR"),
    "too_long": (2, "prompt is too long", "at most 77; use smaller n_s/n_c or shorter identif"),
    "existing": (2, "already holds a run (run.json, stylized.png)", "pass --resume"),
    "input_in_out": (2, "lies where this run writes its results", "choose another --out"),
    "out_inside_run": (2, "lies inside the run in", "choose a folder outside it"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_fails_with_one_line(world, name):
    code, problem, fix = BAD[name]
    line = one_error_line(world.results[name], code)
    assert problem in line and fix in line, line
    world.assert_inputs_unchanged()


def test_existing_run_is_left_alone(world):
    assert checksums(world.runs / "existing") == world.existing_before
    _, again, other = world.results["main"]
    assert "already holds a run" in one_error_line(again, 2)
    line = one_error_line(other, 2)
    assert "holds a run with other options (--n-s 3 -> 2)" in line and "another --out" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(world):
    line = one_error_line(world.results["cuda"], 1)
    assert "no CUDA GPU is available" in line and "--device cpu" in line
    world.assert_inputs_unchanged()


def test_failed_runs_create_no_output_folder(world):
    made = {p.name for p in world.runs.iterdir()}
    assert made == {"main", "repeat", "interrupted", "existing"}


def test_default_settings_follow_the_model():
    """The miniature model (the default) gets its own lr and sampling defaults; others SD's."""
    from styo.pipeline import DEFAULT_MODEL
    from styo.profiles import PROFILES, profile_of

    assert profile_of(None) == profile_of(str(DEFAULT_MODEL)) == "mini"
    assert profile_of("stable-diffusion-v1-5/stable-diffusion-v1-5") == "sd"
    assert PROFILES["mini"]["lr"] == 1e-4 and PROFILES["sd"]["lr"] == 1e-6


def test_omitted_numbers_come_from_the_profile_and_are_reported_as_chosen(tmp_path):
    from styo.cli import build_parser
    from styo.cli.stylize import stylize_settings
    from styo.profiles import PROFILES
    from styo.prompts import Identifiers

    base = ["stylize", "--source", "s.png", "--target", "t.png", "--out", str(tmp_path / "o")]
    for profile in ("mini", "sd"):
        settings, why = stylize_settings(build_parser().parse_args(base), profile, Identifiers())
        for key in ("steps", "lr", "sample_steps", "guidance", "aux", "strength", "train_text_encoder"):
            assert settings[key] == why["chosen"][key] == PROFILES[profile][key], (profile, key)
    settings, why = stylize_settings(build_parser().parse_args([*base, "--steps", "7"]), "mini", Identifiers())
    assert settings["steps"] == 7 and "steps" not in why["chosen"]
    for flag, value in (("--train-text-encoder", True), ("--no-train-text-encoder", False)):
        settings, why = stylize_settings(build_parser().parse_args([*base, flag, "--strength", "0.5"]),
                                         "mini", Identifiers())
        assert settings["train_text_encoder"] is value and settings["strength"] == 0.5
        assert not {"train_text_encoder", "strength"} & set(why["chosen"])


def test_a_lora_run_does_not_take_the_profiles_text_encoder_training(tmp_path):
    """LoRA adapts the UNet only: on the mini profile (which trains the text encoder) a LoRA run
    turns that off, says so under "chosen", and still builds a valid IDL config."""
    from styo.cli import UsageError, build_parser
    from styo.cli.stylize import idl_config, stylize_settings
    from styo.profiles import PROFILES
    from styo.prompts import Identifiers

    assert PROFILES["mini"]["train_text_encoder"] is True
    base = ["stylize", "--source", "s.png", "--target", "t.png", "--out", str(tmp_path / "o")]
    settings, why = stylize_settings(build_parser().parse_args([*base, "--lora-rank", "4"]), "mini",
                                     Identifiers())
    assert settings["lora_rank"] == 4
    assert settings["train_text_encoder"] is False and why["chosen"]["train_text_encoder"] is False
    config = idl_config(settings, Identifiers())
    assert config.lora_rank == 4 and config.train_text_encoder is False
    settings, _ = stylize_settings(
        build_parser().parse_args([*base, "--lora-rank", "4", "--train-text-encoder"]), "mini", Identifiers())
    with pytest.raises(UsageError, match="LoRA trains the UNet only"):
        idl_config(settings, Identifiers())


def test_stable_diffusion_on_a_small_gpu_gets_the_t4_profile_and_the_run_says_why(tmp_path, monkeypatch):
    """The profile comes from the model folder; for SD it then depends on the GPU's memory: a
    15 GB T4 gets gradient checkpointing, 8-bit Adam and fp16; a large GPU or a CPU the paper's."""
    from styo import memory
    from styo.cli import build_parser
    from styo.cli.stylize import idl_config, model_profile, stylize_settings
    from styo.profiles import DEFAULT_MODEL
    from styo.prompts import Identifiers

    hub = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert model_profile(hub, "cpu")[0] == "sd"
    assert model_profile(str(DEFAULT_MODEL), "cuda")[0] == "mini"
    monkeypatch.setattr(memory, "gpu_memory", lambda: 80 * memory.GIB)
    assert model_profile(hub, "cuda")[0] == "sd"
    monkeypatch.setattr(memory, "gpu_memory", lambda: 15_000_000_000)
    profile, why = model_profile(hub, "cuda")
    assert profile == "sd-t4" and "GiB" in why and "8-bit Adam" in why
    base = ["stylize", "--source", "s.png", "--target", "t.png", "--out", str(tmp_path / "o"),
            "--device", "cuda"]
    settings, record = stylize_settings(build_parser().parse_args(base), profile, Identifiers(), why)
    assert record["why"] == why
    assert record["chosen"]["mixed_precision"] == "fp16" and record["chosen"]["aux"] == 64
    assert record["chosen"]["gradient_checkpointing"] and record["chosen"]["use_8bit_adam"]
    config = idl_config(settings, Identifiers())
    assert config.gradient_checkpointing and config.use_8bit_adam and config.mixed_precision == "fp16"
    on_cpu, _ = stylize_settings(build_parser().parse_args([*base[:-2], "--device", "cpu"]), "sd",
                                 Identifiers())
    assert on_cpu["mixed_precision"] == "no" and not on_cpu["use_8bit_adam"]


def test_training_time_augmentation_also_augments_the_reconstruction_prompt():
    from styo.cli.stylize import fcc_prompts
    from styo.prompts import Identifiers, source_prompt

    settings = {"prompts": "contrastive", "n_s": 3, "n_c": 2, "augment_training": False}
    assert fcc_prompts(Identifiers(), settings)["reconstruction"] == source_prompt()
    settings["augment_training"] = True
    rec = fcc_prompts(Identifiers(), settings)["reconstruction"]
    assert rec == source_prompt(n_s=3, n_c=2) and rec.count("ak47 not aug") == 3
