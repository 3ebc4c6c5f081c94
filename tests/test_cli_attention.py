"""`styo attention` through the console script, and the pieces it is made of, in process.

The command runs on the tiny random pipeline saved as a model folder; the command-line runs are
started together (mostly interpreter start-up) and the tests read their results.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from styo.book.viz import plot_word_maps  # noqa: E402
from styo.generate import generate_with_attention  # noqa: E402
from styo.testing import tiny_pipeline  # noqa: E402

_LOCAL = Path(sys.executable).parent / "styo"
STYO = str(_LOCAL) if _LOCAL.exists() else (shutil.which("styo") or "styo")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
PROMPT = "a drawing with aug style of sks portrait"
Result = subprocess.CompletedProcess


def styo(*args: object) -> Result:
    return subprocess.run(
        [STYO, "attention", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600
    )


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_error_line(res: Result, code: int) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, res.stderr
    assert len(lines) == 1 and lines[0].startswith("styo: error: "), res.stderr
    return lines[0]


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.model = root / "model"
        self.run = root / "a-stylize-run"  # what `styo stylize --out` leaves, minus the images
        self.existing = root / "existing.png"
        self.before: dict[str, str] = {}
        self.results: dict[str, Result] = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    s = Setup(tmp_path_factory.mktemp("attention"))
    pipe = tiny_pipeline(0)
    pipe.save_pretrained(s.model)
    pipe.save_pretrained(s.run / "idl" / "pipeline")
    (s.run / "run.json").write_text('{"status": "finished"}\n')
    s.existing.write_bytes(b"someone's figure")
    s.before = checksums(s.root)
    out = s.root / "out"
    common = ["--prompt", PROMPT, "--steps", "3", "--no-progress"]
    cases = {
        "default": ["--model", s.model, *common, "--out", out / "all.png"],
        "words": ["--model", s.run, *common, "--words", "sks", "portrait", "--out",
                  out / "words.png"],
        "too_long": ["--model", s.model, "--prompt", "a drawing of " + "7" * 80,
                     "--out", out / "long.png"],
        "exists": ["--model", s.model, *common, "--out", s.existing],
        "not_png": ["--model", s.model, *common, "--out", out / "figure.jpg"],
        "unknown_word": ["--model", s.model, *common, "--words", "hat", "--out", out / "x.png"],
        "steps_0": ["--model", s.model, *common, "--steps", "0", "--out", out / "y.png"],
        "empty_prompt": ["--model", s.model, "--prompt", " ", "--out", out / "z.png"],
        "maps": ["--model", s.model, *common, "--maps", out / "maps"],
        "neither": ["--model", s.model, *common],
        "maps_taken": ["--model", s.model, *common, "--maps", s.run],
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(styo, *args) for name, args in cases.items()}
        s.results = {name: f.result() for name, f in futures.items()}
    return s


def test_figure_has_the_image_and_a_map_per_word(setup):
    res = setup.results["default"]
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "warning" not in res.stderr.lower()
    figure = Image.open(setup.root / "out" / "all.png")
    words = Image.open(setup.root / "out" / "words.png")
    # 8 words + the image: two rows of six panels; 2 words + the image: one row of three
    assert figure.width == 2 * words.width and figure.height > 1.5 * words.height
    assert np.asarray(figure.convert("L")).std() > 10  # not blank


def test_maps_folder_has_the_image_and_one_grey_map_per_word(setup):
    res = setup.results["maps"]
    assert res.returncode == 0, res.stderr
    folder = setup.root / "out" / "maps"
    words = list(dict.fromkeys(PROMPT.split()))
    assert sorted(p.name for p in folder.iterdir()) == sorted(["image.png", *(f"{w}.png" for w in words)])
    image = Image.open(folder / "image.png")
    for word in words:
        heat = Image.open(folder / f"{word}.png")
        assert heat.mode == "L" and heat.size == image.size
        assert np.asarray(heat).max() == 255  # scaled to its own maximum


def test_a_stylize_run_folder_stands_for_its_fine_tuned_pipeline(setup):
    res = setup.results["words"]
    assert res.returncode == 0, res.stderr
    assert "is a stylize run; using its fine-tuned pipeline" in res.stderr
    assert checksums(setup.root)["a-stylize-run/run.json"] == setup.before["a-stylize-run/run.json"]


BAD = {
    "too_long": ("--prompt is too long: prompt", "at most 77"),
    "exists": ("existing.png exists", "choose another file"),
    "not_png": ("figure.jpg must be a .png file", "--out"),
    "unknown_word": ("--words hat not in the prompt", "choose from: a drawing with aug"),
    "steps_0": ("--steps must be a positive number of sampling steps", "got 0"),
    "empty_prompt": ("--prompt is empty", "pass the words"),
    "neither": ("give --out FILE.png", "--maps DIR"),
    "maps_taken": ("is not a new or empty folder", "choose another"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_fails_with_one_line(setup, name):
    problem, fix = BAD[name]
    line = one_error_line(setup.results[name], 2)
    assert problem in line and fix in line, line
    assert {k: v for k, v in checksums(setup.root).items() if not k.startswith("out/")} == (
        setup.before
    )
    assert setup.existing.read_bytes() == b"someone's figure"


# --- in process --------------------------------------------------------------------------------


def test_recording_does_not_change_the_image():
    """The recorder's processors compute attention explicitly but must not alter the result."""
    torch.set_num_threads(1)
    pipe = tiny_pipeline(1)
    image, recorder = generate_with_attention(
        pipe, PROMPT, seed=5, num_inference_steps=3, guidance_scale=4.0, progress=False
    )
    assert recorder.recorded_steps == [0, 1, 2]
    maps = recorder.aggregate(["sks", "portrait"], branch="sty")
    assert set(maps) == {"sks", "portrait"}
    for heat in maps.values():
        assert heat.shape == (16, 16) and heat.max() == pytest.approx(1.0)
    gen = torch.Generator("cpu").manual_seed(5)
    start = torch.randn((1, 4, 8, 8), generator=gen)
    plain = pipe(PROMPT, latents=start, num_inference_steps=3, guidance_scale=4.0,
                 height=16, width=16).images[0]
    diff = np.abs(np.asarray(image, dtype=int) - np.asarray(plain, dtype=int))
    assert diff.max() <= 1


def test_plot_word_maps_lays_out_panels():
    image = Image.new("RGB", (16, 16), (120, 80, 40))
    maps = {"a": np.zeros((16, 16)), "b": np.ones((4, 4)), "c": np.eye(16)}  # any resolution
    fig = plot_word_maps(image, maps, title="t")
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 4 and [ax.get_title() for ax in drawn] == ["image", "a", "b", "c"]
    assert len(plot_word_maps(image, maps, cols=2).axes) == 4
    with pytest.raises(ValueError):
        plot_word_maps(image, {})
