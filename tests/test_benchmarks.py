"""The SD-scale benchmark script: SD-1.5 configs have SD-1.5's shapes, and a smoke run works.

The smoke run is the reduced model at 64² on CPU (about 30 s on one thread); the SD-1.5 figures
themselves need a GPU and are recorded by hand in benchmarks/results/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import benchmark_script
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "sd_scale.py"


@pytest.fixture(scope="module")
def bench():
    """sd_scale.py as a module, shared by this file's tests of it."""
    return benchmark_script("sd_scale")


def test_sd15_configs_have_sd15_parameter_counts(bench):
    counts = bench.param_counts("sd15")  # built on the meta device: instant, no memory
    assert counts == pytest.approx(bench.SD15_PARAMS, rel=1e-3)
    assert counts["unet"] == pytest.approx(859.5e6, rel=1e-3)
    assert counts["vae"] == pytest.approx(83.7e6, rel=1e-3)
    assert counts["text_encoder"] == pytest.approx(123.06e6, rel=1e-3)
    smoke = bench.param_counts("smoke")
    assert all(0 < smoke[k] < counts[k] / 50 for k in counts)


def test_profiles_are_valid_idl_configs(bench):
    from styo.idl import IDLConfig

    for name, profile in bench.PROFILES.items():
        IDLConfig(checkpoint_every=0, **profile["idl"])  # raises on a bad override
        assert profile["pipeline_dtype"] in bench._DTYPES, name


def test_smoke_run_reports_every_profile(tmp_path, bench):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["--scale", "smoke", "--device", "cpu", "--idl-steps", "2", "--fcc-steps", "2"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "cpu-smoke.json").read_text())
    assert (tmp_path / "cpu-smoke.md").is_file()
    assert report["kind"] == "smoke" and "SMOKE" in report["note"]
    assert report["device"]["type"] == "cpu"
    assert report["versions"]["torch"] and report["versions"]["diffusers"]
    assert set(report["idl"]) == set(bench.PROFILES)
    ran = 0
    for name, p in report["idl"].items():
        if p["status"] == "skipped":
            assert p["reason"], name
            continue
        assert p["status"] == "ok", (name, p)
        ran += 1
        assert p["timed_steps"] == 2 and len(p["step_times_s"]) == 2 and p["losses_finite"]
        for key in ("step_time_median_s", "projected_400_steps_s", "setup_and_first_step_s"):
            assert p[key] > 0, (name, key)
        assert p["projected_400_steps_s"] == pytest.approx(400 * p["step_time_median_s"])
        assert p["peak_rss_gib"] is None or p["peak_rss_gib"] > 0
    assert ran >= 4  # every profile without bitsandbytes runs on CPU
    fcc = report["fcc"]
    assert set(fcc["variants"]) == {"off", "idle", "on"}
    assert all(v["median_s"] > 0 for v in fcc["variants"].values())
    assert fcc["ratio_on_off"] > 0 and fcc["ratio_idle_off"] > 0
    assert len(report["targets"]) == 3
    assert all(t["status"] == "n/a" for t in report["targets"])  # smoke: targets not judged


def test_mini_scale_times_fcc_on_the_shipped_model_against_its_own_target(tmp_path, bench):
    """--scale mini loads models/styo-mini (trained weights, not a random build), times only FCC,
    and judges the one target that applies there from the medians it reports."""
    report = _run_mini(tmp_path, bench)
    assert report["kind"] == "mini" and report["idl"] == {}
    assert report["params"]["unet"] == sum(
        p.numel() for p in bench.build_pipeline("mini", torch.device("cpu"), torch.float32).unet.parameters())
    fcc = report["fcc"]
    med = {v: r["median_s"] for v, r in fcc["variants"].items()}
    assert fcc["ratio_on_off"] == pytest.approx(med["on"] / med["off"])
    [target] = report["targets"]
    assert target["threshold"] == bench.TARGETS["fcc_ratio_mini"]
    assert target["status"] == ("pass" if fcc["ratio_on_off"] <= target["threshold"] else "fail")
    assert "## IDL" not in (tmp_path / "cpu-mini.md").read_text()


def _run_mini(tmp_path, bench):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["--scale", "mini", "--device", "cpu", "--fcc-steps", "4", "--fcc-repeats", "1"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "cpu-mini.json").read_text())


@pytest.mark.notebook
def test_book_timing_executes_a_chapter_and_records_its_time(tmp_path):
    """benchmarks/book_timing.py on one chapter: it runs it with a parameter override and writes
    both result files, the total matching the chapters."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "book_timing.py"), "book/prompts.ipynb",
         "--set", 'book/prompts.ipynb:backend="mini"', "--out-dir", str(tmp_path), "--note", "what was measured"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads((tmp_path / "book-timing.json").read_text())
    assert [r["chapter"] for r in record["chapters"]] == ["book/prompts.ipynb"]
    assert record["chapters"][0]["seconds"] > 0 and record["chapters"][0]["overrides"] == {"backend": "mini"}
    assert record["total_seconds"] == record["chapters"][0]["seconds"]
    table = (tmp_path / "book-timing.md").read_text()
    assert "| **total** |" in table and "what was measured" in table and record["note"] == "what was measured"
    speed = record["reference_step_ms"]
    assert speed["before"] > 0 and speed["after"] > 0 and f"{speed['before']} ms before" in table


def test_book_timing_rejects_a_malformed_override():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "book_timing.py"), "--set", "book/x.ipynb"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "NOTEBOOK:NAME=VALUE" in res.stderr


def test_idl_tuning_trains_each_schedule_on_each_pair_and_scores_it(tmp_path):
    """benchmarks/idl_tuning.py on the tiny pipeline: a row per (schedule, pair), means per schedule."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "idl_tuning.py"), "--model", "tiny",
         "--schedules", "3:1e-3,2:2e-3:unet,2:2e-3:te", "--pairs", "2", "--n-images", "2", "--aux", "2",
         "--note", "tiny check", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads((tmp_path / "idl-tuning.json").read_text())
    assert [(r["steps"], r["lr"], r["trained"]) for r in record["rows"]] == [
        (3, 1e-3, "unet"), (3, 1e-3, "unet"), (2, 2e-3, "unet"), (2, 2e-3, "unet"), (2, 2e-3, "te"), (2, 2e-3, "te")]
    assert [r["pair"] for r in record["rows"]][:2] == ["pair 1 (photo → mosaic)", "pair 2 (photo → halftone)"]
    for summary in record["summary"]:
        mine = [r for r in record["rows"] if (r["steps"], r["trained"]) == (summary["steps"], summary["trained"])]
        assert summary["content"] == pytest.approx(sum(r["content"] for r in mine) / 2)
        assert 0 <= summary["style"] <= 1 and summary["train_s"] > 0
        assert 0 <= summary["target_prompt_style"] <= 1 and 0 <= summary["source_prompt_content"] <= 1
    md = (tmp_path / "idl-tuning.md").read_text()
    assert "tiny check" in md and "| 2 | 0.002 | unet | 2 |" in md and "| 2 | 0.002 | te | 2 |" in md


@pytest.mark.parametrize("bad", ["400", "400:", "x:1e-4", "0:1e-4", "400:-1", "400:1e-4,200", "400:1e-4:vae",
                                 "400:1e-4:te:x"])
def test_idl_tuning_rejects_malformed_schedules(bad):
    module = benchmark_script("idl_tuning")
    assert module.parse_schedules("400:1e-4, 200:2e-4:te,9:1:unet") == [
        (400, 1e-4, None), (200, 2e-4, True), (9, 1.0, False)]
    with pytest.raises(SystemExit, match="STEPS:LR"):
        module.parse_schedules(bad)


def _check_extension(comparison, control, score, pairs, targets):
    """An extension's comparison (ablations.py's compare_controls) on the study's two pairs: its per-pair
    rows, the three controls in order, FCC's row the study's own, and the extension's mean of ``score``
    the mean of its rows."""
    assert [r["pair"] for r in comparison["per_pair"]] == pairs
    means = {m["control"]: m for m in comparison["means"]}
    assert list(means) == ["no FCC", "FCC", control]
    assert means["FCC"]["joint"] == pytest.approx(targets["means"]["joint"])
    assert means[control][score] == pytest.approx(sum(r[score] for r in comparison["per_pair"]) / 2)
    assert comparison["geometry_wins"]["FCC"] == targets["fcc_geometry_wins"]


def test_ablation_study_records_rows_means_claims_and_resumes_from_its_cache(tmp_path):
    """benchmarks/ablations.py on the tiny pipeline: every (pair, variant, FCC) row, the means, the
    claims and the model's fingerprint; a second run loads every IDL run from the cache."""
    from styo.data import model_fingerprint
    from styo.testing import tiny_pipeline

    cmd = [sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "--model", "tiny", "--pairs", "2",
           "--n-images", "2", "--idl-steps", "2", "--grid-pairs", "1", "--cache", str(tmp_path / "cache")]
    first = subprocess.run([*cmd, "--out-dir", str(tmp_path / "a")], capture_output=True, text=True,
                           timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((tmp_path / "a" / "ablations.json").read_text())
    assert len(record["pairs"]) == 2 and len(record["rows"]) == 2 * 3 * 2
    assert {(m["variant"], m["fcc"]) for m in record["means"]} == {
        (v, f) for v in ("positive-only", "contrastive", "contrastive + aux") for f in (False, True)}
    assert all(m["n"] == 2 for m in record["means"]) and len(record["claims"]) == 7
    assert all({"geometry", "joint"} <= set(r) for r in record["rows"])  # the segmentation judge scored
    assert [(r["n_s"], r["n_c"]) for r in record["grid"]] == [(a, b) for a in (1, 2, 3) for b in (1, 2, 3)]
    assert {r["pair"] for r in record["grid"]} == {record["pairs"][0]}
    targets = record["targets"]
    assert [r["pair"] for r in targets["per_pair"]] == record["pairs"]
    full = [r for r in record["rows"] if r["variant"] == "contrastive + aux" and r["fcc"]]
    assert targets["means"]["joint"] == pytest.approx(sum(r["joint"] for r in full) / 2)
    assert targets["met"]["joint"] == (targets["means"]["joint"] >= 0.6)
    assert record["model_fingerprint"] == model_fingerprint(tiny_pipeline())
    assert "**" in (tmp_path / "a" / "ablations.md").read_text()  # the verdicts
    # each pair's perfect stylization scored for scale, beside the method's
    assert [r["pair"] for r in record["ideal"]["per_pair"]] == record["pairs"]
    assert record["ideal"]["means"]["joint"] == pytest.approx(
        sum(r["joint"] for r in record["ideal"]["per_pair"]) / 2)
    assert "For scale, a perfect stylization" in (tmp_path / "a" / "ablations.md").read_text()
    runs = sorted(p.name for p in (tmp_path / "cache" / "idl").iterdir())
    assert len(runs) == 2 * 3  # one IDL run per (pair, variant); FCC on/off sample the same run

    assert record["strengths"] is None  # the paper's strength only when asked for
    assert (record["stylization"]["n_s"], record["stylization"]["n_c"]) == (3, 1)  # the paper's

    # each pair trained with an auxiliary set in its source's style
    assert record["idl"]["aux_styles"] == ["photo", "sketch"]
    assert len(list((tmp_path / "cache" / "aux").glob("aux-*"))) == 2

    again = subprocess.run([*cmd, "--paper-strength", "--self-attention", "0.5", "--content-encodings", "--crossing",
                            "--strength-sweep", "0.5",
                            "--out-dir", str(tmp_path / "b")],
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = json.loads((tmp_path / "b" / "ablations.json").read_text())
    assert rerun["rows"] == record["rows"]  # same seeds, and the IDL runs came from the cache
    assert sorted(p.name for p in (tmp_path / "cache" / "idl").iterdir()) == runs
    # FCC as the paper runs it: every pair's full run sampled from pure noise, with and without FCC
    compared = rerun["strengths"]
    profile = rerun["stylization"]["strength"]
    assert (compared["profile"], compared["paper"], compared["pairs"]) == (profile, 1.0, 2)
    assert {(m["strength"], m["fcc"]) for m in compared["means"]} == {
        (s, f) for s in (profile, 1.0) for f in (False, True)}
    at_profile = next(m for m in compared["means"] if m["strength"] == profile and m["fcc"])
    assert at_profile["joint"] == pytest.approx(targets["means"]["joint"])  # the study's own rows
    joints = {m["strength"]: m["joint"] for m in compared["means"] if m["fcc"]}
    assert joints[compared["better"]] == max(joints.values())
    assert "measures better" in (tmp_path / "b" / "ablations.md").read_text()
    # the sweep: the full method from strength 0.5 beside the profile's own rows, with and without FCC
    sweep = rerun["strength_sweep"]
    assert record["strength_sweep"] is None and (sweep["profile"], sweep["pairs"]) == (profile, 2)
    assert [(m["strength"], m["fcc"]) for m in sweep["means"]] == [
        (s, f) for s in sorted({0.5, profile}) for f in (False, True)]
    swept_profile = next(m for m in sweep["means"] if m["strength"] == profile and m["fcc"])
    assert swept_profile["joint"] == pytest.approx(targets["means"]["joint"])  # the study's own rows
    assert "from several depths of the diffused source" in (tmp_path / "b" / "ablations.md").read_text()
    # the extension: FCC plus the reconstruction's self-attention over the first half of the steps
    shared = rerun["self_attention"]
    assert shared["fraction"] == 0.5
    _check_extension(shared, "FCC + self-attention", "geometry", rerun["pairs"], targets)
    assert "An extension, not the paper's method" in (tmp_path / "b" / "ablations.md").read_text()
    # the other extension: FCC plus the reconstruction's text encodings of the content words
    copied = rerun["content_encodings"]
    assert record["content_encodings"] is None  # only when asked for
    _check_extension(copied, "FCC + content encodings", "content", rerun["pairs"], targets)
    off = {r["pair"]: r["content"] for r in record["rows"] if r["variant"] == "contrastive + aux" and not r["fcc"]}
    assert copied["content_wins"]["FCC + content encodings"] == sum(
        r["content"] > off[r["pair"]] for r in copied["per_pair"])
    assert "text encodings of the content words" in (tmp_path / "b" / "ablations.md").read_text()
    # every run crossed (loaded from the cache, not trained again): the four effects per pair
    from styo.book.crossing import EFFECTS

    assert record["crossing"] is None  # only when asked for
    assert rerun["crossing"]["images"] == 2 * 2  # twice --n-images
    crossing = rerun["crossing"]["effects"]
    assert list(crossing) == ["positive-only", "contrastive", "contrastive + aux"]
    assert all(list(by_pair) == rerun["pairs"] and all(set(e) == set(EFFECTS) for e in by_pair.values())
               for by_pair in crossing.values())
    assert "Which identifier carries what" in (tmp_path / "b" / "ablations.md").read_text()

    # a candidate base model judged on the full method alone: that variant's rows, claims and crossing
    alone = subprocess.run([*cmd[:-4], "--variant", "contrastive + aux", "--crossing", "--out-dir",
                            str(tmp_path / "c"), "--cache", str(tmp_path / "cache")],
                           capture_output=True, text=True, timeout=600, check=False)
    assert alone.returncode == 0, alone.stderr[-2000:]
    only = json.loads((tmp_path / "c" / "ablations.json").read_text())
    assert only["rows"] == [r for r in record["rows"] if r["variant"] == "contrastive + aux"]
    assert only["targets"] == targets and list(only["crossing"]["effects"]) == ["contrastive + aux"]
    assert only["crossing"]["effects"]["contrastive + aux"] == crossing["contrastive + aux"]
    assert {c["text"] for c in only["claims"]} < {c["text"] for c in record["claims"]}  # FCC's claims only
    assert sorted(p.name for p in (tmp_path / "cache" / "idl").iterdir()) == runs  # nothing trained
    # another IDL seed trains every run of the variant again, and the record says which seed
    seeded = subprocess.run([*cmd[:-4], "--variant", "contrastive + aux", "--idl-seed", "1", "--out-dir",
                             str(tmp_path / "e"), "--cache", str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=600, check=False)
    assert seeded.returncode == 0, seeded.stderr[-2000:]
    assert (only["idl"]["seed"], json.loads((tmp_path / "e" / "ablations.json").read_text())["idl"]["seed"]) == (0, 1)
    assert len(list((tmp_path / "cache" / "idl").iterdir())) == len(runs) + 2
    assert "(seed 1)" in (tmp_path / "e" / "ablations.md").read_text().splitlines()[2]  # the header line
    # the auxiliary sets from the renderer: new runs (other aux images), no portraits generated
    rendered = subprocess.run([*cmd[:-4], "--variant", "contrastive + aux", "--rendered-aux", "--out-dir",
                               str(tmp_path / "f"), "--cache", str(tmp_path / "cache")],
                              capture_output=True, text=True, timeout=600, check=False)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    from_renders = json.loads((tmp_path / "f" / "ablations.json").read_text())
    assert from_renders["idl"]["aux_rendered"] is True and "aux_rendered" not in only["idl"]
    assert len(list((tmp_path / "cache" / "idl").iterdir())) == len(runs) + 4
    assert len(list((tmp_path / "cache" / "aux").glob("aux-*"))) == 2  # the generated sets only
    assert "rendered auxiliary portraits" in (tmp_path / "f" / "ablations.md").read_text().splitlines()[2]
    # the auxiliary term weighted: new runs, and the record and its header say by how much
    weighted = subprocess.run([*cmd[:-4], "--variant", "contrastive + aux", "--aux-weight", "3", "--out-dir",
                               str(tmp_path / "g"), "--cache", str(tmp_path / "cache")],
                              capture_output=True, text=True, timeout=600, check=False)
    assert weighted.returncode == 0, weighted.stderr[-2000:]
    assert json.loads((tmp_path / "g" / "ablations.json").read_text())["idl"]["aux_weight"] == 3.0
    assert "aux_weight" not in only["idl"] and len(list((tmp_path / "cache" / "idl").iterdir())) == len(runs) + 6
    assert "their term weighted 3" in (tmp_path / "g" / "ablations.md").read_text().splitlines()[2]
    # the augmented prompt at training time: new runs on the repeated prompts, said in the record and header
    augmented = subprocess.run([*cmd[:-4], "--variant", "contrastive + aux", "--train-augmented", "--out-dir",
                                str(tmp_path / "h"), "--cache", str(tmp_path / "cache")],
                               capture_output=True, text=True, timeout=600, check=False)
    assert augmented.returncode == 0, augmented.stderr[-2000:]
    at_training = json.loads((tmp_path / "h" / "ablations.json").read_text())
    assert at_training["idl"]["train_repeats"] == {"n_s": 3, "n_c": 1} and "train_repeats" not in only["idl"]
    assert len(list((tmp_path / "cache" / "idl").iterdir())) == len(runs) + 8
    prompts = [json.loads((d / "losses.json").read_text())["prompts"]["source"]
               for d in (tmp_path / "cache" / "idl").iterdir()]
    assert sum(p.count("ak47 not aug") == 3 for p in prompts) == 2  # one run per pair, on the repeated prompt
    assert "trained on the augmented prompts (n_s = 3, n_c = 1)" in (tmp_path / "h" / "ablations.md").read_text()
    # the target term on the target's variants: new runs, said in the record and header
    varied = subprocess.run([*cmd[:-4], "--variant", "contrastive + aux", "--augment-target", "--out-dir",
                             str(tmp_path / "i"), "--cache", str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=600, check=False)
    assert varied.returncode == 0, varied.stderr[-2000:]
    assert json.loads((tmp_path / "i" / "ablations.json").read_text())["idl"]["augment_target"] is True
    assert "augment_target" not in only["idl"] and len(list((tmp_path / "cache" / "idl").iterdir())) == len(runs) + 10
    assert "colour permutations and mirror images" in (tmp_path / "i" / "ablations.md").read_text().splitlines()[2]
    # a target-side term of painted portraits: new runs for the variant with auxiliary portraits, the
    # same cached runs for the one without (it trains without either), said in the record and header
    painted = subprocess.run([*cmd[:-4], "--variant", "contrastive", "--variant", "contrastive + aux", "--target-aux",
                              "2", "--out-dir", str(tmp_path / "j"), "--cache", str(tmp_path / "cache")],
                             capture_output=True, text=True, timeout=600, check=False)
    assert painted.returncode == 0, painted.stderr[-2000:]
    assert json.loads((tmp_path / "j" / "ablations.json").read_text())["idl"]["target_aux"] == 2
    assert "target_aux" not in only["idl"] and len(list((tmp_path / "cache" / "idl").iterdir())) == len(runs) + 12
    assert "2 of them painted with the target's texture" in (tmp_path / "j" / "ablations.md").read_text().splitlines()[2]
    terms = [json.loads((d / "losses.json").read_text())["prompts"] for d in (tmp_path / "cache" / "idl").iterdir()]
    assert sum("target_aux" in t for t in terms) == 2
    # the control with targets in pretraining styles: other pairs, so new runs; the record and header say so
    known = subprocess.run([*cmd[:-4], "--variant", "contrastive + aux", "--target-styles", "pixel",
                            "--source-styles", "sketch", "--out-dir", str(tmp_path / "k"), "--cache",
                            str(tmp_path / "cache")], capture_output=True, text=True, timeout=600, check=False)
    assert known.returncode == 0, known.stderr[-2000:]
    control = json.loads((tmp_path / "k" / "ablations.json").read_text())
    assert control["pairs"] == ["pair 1 (photo → pixel)", "pair 2 (sketch → pixel)"]
    assert control["pair_styles"] == {"target_styles": ["pixel"], "source_styles": ["sketch"]}
    assert "pair_styles" not in only and len(list((tmp_path / "cache" / "idl").iterdir())) == len(runs) + 14
    assert "(targets in pixel; sources in sketch)" in (tmp_path / "k" / "ablations.md").read_text().splitlines()[2]
    wrong = subprocess.run([*cmd, "--variant", "contrastive+aux", "--out-dir", str(tmp_path / "d")],
                           capture_output=True, text=True, timeout=600, check=False)
    assert wrong.returncode != 0 and "unknown --variant 'contrastive+aux'" in wrong.stderr
    for bad, message in (("0.5,x", "is not a comma-separated list"), ("0,0.5", "must be in (0, 1]")):
        swept_bad = subprocess.run([*cmd, "--strength-sweep", bad, "--out-dir", str(tmp_path / "d")],
                                   capture_output=True, text=True, timeout=600, check=False)
        assert swept_bad.returncode != 0 and message in swept_bad.stderr.splitlines()[-1]
    plain = subprocess.run([*cmd, "--train-augmented", "--n-s", "1", "--out-dir", str(tmp_path / "d")],
                           capture_output=True, text=True, timeout=600, check=False)
    assert plain.returncode != 0 and "--train-augmented repeats the prompts" in plain.stderr
    negative = subprocess.run([*cmd, "--aux-weight", "-1", "--out-dir", str(tmp_path / "d")],
                              capture_output=True, text=True, timeout=600, check=False)
    assert negative.returncode != 0 and "--aux-weight must be a number >= 0" in negative.stderr
    no_portraits = subprocess.run([*cmd, "--target-aux", "-1", "--out-dir", str(tmp_path / "d")],
                                  capture_output=True, text=True, timeout=600, check=False)
    assert no_portraits.returncode != 0 and "--target-aux must be an integer >= 0" in no_portraits.stderr
    repeats = subprocess.run([*cmd, "--n-c", "6", "--out-dir", str(tmp_path / "d")],
                             capture_output=True, text=True, timeout=600, check=False)
    assert repeats.returncode != 0 and "--n-c must be a whole number from 1 to 5, got 6" in repeats.stderr
    for styles, message in ((["--target-styles", "pixel"], "pixel is also a source style"),
                            (["--target-styles", "mosaic,opal"], "must name styles of the world"),
                            (["--source-styles", "halftone"], "must name pretraining styles")):
        clash = subprocess.run([*cmd, *styles, "--out-dir", str(tmp_path / "d")],
                               capture_output=True, text=True, timeout=600, check=False)
        assert clash.returncode != 0 and message in clash.stderr.splitlines()[-1]
    assert not (tmp_path / "d").exists()


def test_fcc_probe_measures_sharpness_distances_and_each_attention_control(tmp_path):
    """benchmarks/fcc_probe.py on the tiny pipeline: the three controls at each strength, and the
    sharpness and prompt distances it reports are the library's own measurements."""
    from styo.sharpness import attention_sharpness
    from styo.testing import tiny_pipeline

    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fcc_probe.py"), "--model", "tiny", "--idl-steps", "2",
         "--n-images", "2", "--aux", "2", "--strengths", "0.6,1.0", "--pairs", "2",
         "--train-text-encoder", "--out-dir", str(tmp_path), "--name", "fcc-probe-ns1"],
        capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fcc-probe-ns1.json", "fcc-probe-ns1.md"]
    from styo.book import results

    assert results.benchmark_runs(tmp_path) == []  # the appendix does not take it for an sd_scale report
    record = json.loads((tmp_path / "fcc-probe-ns1.json").read_text())
    assert [(r["strength"], r["control"]) for r in record["fcc"]] == [
        (s, c) for s in (0.6, 1.0) for c in ("no FCC", "FCC (paper)", "every token")]
    assert all(0 <= r["content"] <= 1 and 0 <= r["style"] <= 1 and r["n"] == 2 for r in record["fcc"])
    # the table is the mean over the two pairs of the per-pair rows
    assert len(record["pairs"]) == 2 and len(record["fcc_rows"]) == 2 * len(record["fcc"])
    for mean in record["fcc"]:
        mine = [r for r in record["fcc_rows"] if (r["strength"], r["control"]) == (mean["strength"], mean["control"])]
        assert {r["pair"] for r in mine} == set(record["pairs"])
        assert mean["pose"] == pytest.approx(sum(r["pose"] for r in mine) / 2)
    probe = benchmark_script("fcc_probe")
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    assert record["base"]["sharpness"] == pytest.approx(
        attention_sharpness(pipe, list(probe.PROMPTS.values())), rel=1e-6)
    assert record["base"]["distances"] == pytest.approx(probe.distances(pipe), rel=1e-6)
    assert record["base"]["distances"]["source vs target"] > 0
    md = (tmp_path / "fcc-probe-ns1.md").read_text()
    assert record["idl_steps"] == 2 and "| 1.00 | every token |" in md
    assert record["train_text_encoder"] and "UNet and text encoder" in md


def test_fcc_probe_rejects_bad_strengths(tmp_path):
    probe = benchmark_script("fcc_probe")
    for bad in ("0.8,x", "0,1.0", "1.5"):  # refused before any model is loaded
        with pytest.raises(SystemExit, match="--strengths"):
            probe.main(["--model", "tiny", "--strengths", bad, "--out-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_fcc_probe_says_where_each_word_of_the_content_phrase_lands():
    """On the miniature world the probe segments the reconstruction and stylization pictures and
    splits each content-phrase word's heat over the judged head and background."""
    from styo.pipeline import load_pipeline
    from styo.profiles import DEFAULT_MODEL
    from styo.world.segmenter import load_segmenter

    probe = benchmark_script("fcc_probe")
    rows = probe.identifier_maps(load_pipeline(DEFAULT_MODEL), load_segmenter(), seed=0)
    assert [(r["prompt"], r["word"]) for r in rows] == [
        (p, w) for p in ("source", "stylization") for w in ("sks", "not", "m4a1", "portrait", "ak47")]
    for r in rows:
        assert 0 <= r["head share"] + r["background share"] <= 1 + 1e-6
        assert 0 < r["head area"] < 1


def test_identifier_embeddings_only_trains_the_unet_and_the_identifiers_rows_alone(tmp_path):
    """The recombination probe's `embeddings` variant: of the text encoder only the identifiers'
    embedding rows move; the library's own IDL set-up is back afterwards."""
    from styo import finetune
    from styo.idl import IDLConfig, train
    from styo.testing import tiny_pipeline

    recombination = benchmark_script("recombination")
    pipe = tiny_pipeline()
    before_te = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    before_unet = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    image = Image.new("RGB", (16, 16), (200, 120, 40))
    config = IDLConfig(steps=3, lr=1e-2, train_text_encoder=True, checkpoint_every=0)
    with recombination.identifier_embeddings_only(pipe, lr_multiplier=50.0) as rows:
        train(pipe, image, image, [image], config, output_dir=tmp_path / "run", progress=False)
    assert finetune.prepare_modules.__module__ == "styo.finetune"  # unwrapped again
    after = pipe.text_encoder.state_dict()
    key = next(k for k in after if k.endswith("token_embedding.weight"))
    moved = (after[key] != before_te[key]).any(1).nonzero().flatten().tolist()
    assert moved and set(moved) <= set(rows)  # only identifier rows, and some of them
    assert all(torch.equal(after[k], v) for k, v in before_te.items() if k != key)
    assert any(not torch.equal(pipe.unet.state_dict()[k], v) for k, v in before_unet.items())


def test_recombination_probe_labels_each_setting(tmp_path):
    """benchmarks/recombination.py on the tiny pipeline: a row per (variant, pair, setting) with the
    scores, and the outcome words of the summary."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "recombination.py"), "--model", "tiny", "--pairs", "2",
         "--variants", "te,embeddings", "--steps", "2", "--strengths", "0.7", "--guidance", "2,5",
         "--n-images", "2", "--cache", str(tmp_path / "cache"), "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "recombination.json").read_text())
    assert len(record["rows"]) == 2 * 2 * 2
    assert {(r["variant"], r["guidance_scale"]) for r in record["rows"]} == {
        (v, g) for v in ("te", "embeddings") for g in (2.0, 5.0)}
    assert all({"joint", "geometry", "leak"} <= set(r) for r in record["rows"])
    assert all(-1 <= r[k] <= 1 for r in record["rows"] for k in ("portrait_cos_source", "portrait_cos_target"))
    assert "`portrait_cos_source` / `portrait_cos_target`" in (tmp_path / "recombination.md").read_text()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["embeddings", "te"]
    recombination = benchmark_script("recombination")
    assert recombination.outcome({"joint": 0.75, "style": 1, "leak": 0, "content": 1, "source_style": 0}) == "stylization"
    assert recombination.outcome({"joint": 0, "style": 0.9, "leak": 0.8, "content": 0.1, "source_style": 0}) == "target"
    assert recombination.outcome({"joint": 0, "style": 0.0, "leak": 0.0, "content": 0.9, "source_style": 0.9}) == "source"
    with pytest.raises(SystemExit, match="unknown"):
        recombination.main(["--variants", "te,lora"])


class _HeadInTopLeft:
    """A stand-in segmentation judge: every picture's head fills the top-left quarter."""

    def regions(self, images):
        from styo.world.render import REGIONS

        out = np.zeros((len(images), 64, 64), np.uint8)
        out[:, :32, :32] = REGIONS.index("face")
        return out


def _content_head_share(pipe, prompt: str, word: str) -> float:
    """Share of ``word``'s cross-attention (all layers, one noisy step) in the top-left quarter."""
    from styo.attention import word_indices
    from styo.world import grounding

    processors = dict(pipe.unet.attn_processors)
    store = grounding.install(pipe.unet)
    try:
        ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        side = pipe.unet.config.sample_size
        with torch.no_grad():
            pipe.unet(torch.randn(4, 4, side, side, generator=torch.Generator().manual_seed(0)),
                      torch.tensor([500] * 4), encoder_hidden_states=pipe.text_encoder(ids)[0].expand(4, -1, -1))
        maps = grounding.word_maps(store, side)[..., word_indices(pipe.tokenizer, prompt, [word])[word]].sum(-1)
    finally:
        pipe.unet.set_attn_processor(processors)
    maps = maps.view(-1, side, side)
    return float(maps[:, : side // 2, : side // 2].sum() / maps.sum())


def test_grounded_content_words_moves_the_content_identifiers_maps_onto_the_head(tmp_path):
    """The recombination probe's `grounded` variant: at weight 0 IDL is bit-identical to the
    library's; with weight the source's content identifier attends more on the judged head; the
    library's loss and the UNet's processors are back afterwards."""
    from styo import idl
    from styo.idl import IDLConfig, prompts_for, train
    from styo.testing import tiny_pipeline

    recombination = benchmark_script("recombination")
    image = Image.new("RGB", (16, 16), (200, 120, 40))
    config = IDLConfig(steps=8, lr=3e-3, train_text_encoder=True, checkpoint_every=0)
    source_prompt = prompts_for(config)["source"]

    def trained(weight: float | None, name: str):
        pipe = tiny_pipeline()
        processors = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
        if weight is None:
            train(pipe, image, image, [image], config, output_dir=tmp_path / name, progress=False)
        else:
            with recombination.grounded_content_words(pipe, config, _HeadInTopLeft(), image, image, weight):
                train(pipe, image, image, [image], config, output_dir=tmp_path / name, progress=False)
        assert idl.idl_loss.__module__ == "styo.idl"
        assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == processors
        return pipe

    plain, zero, grounded = trained(None, "plain"), trained(0.0, "zero"), trained(20.0, "grounded")
    plain_state = plain.unet.state_dict()
    assert all(torch.equal(v, plain_state[k]) for k, v in zero.unet.state_dict().items())
    assert any(not torch.equal(v, plain_state[k]) for k, v in grounded.unet.state_dict().items())
    share = {name: _content_head_share(p, source_prompt, config.ids.c_src)
             for name, p in (("plain", plain), ("grounded", grounded))}
    assert share["grounded"] > share["plain"] + 0.05, share


def test_grounding_ceiling_bounds_each_region(tmp_path):
    """benchmarks/grounding_ceiling.py: the miniature UNet's attention sides DAAM aggregates, a
    searched bound at least the coverage bound, small regions bounded well below large ones, and
    the results files."""
    ceiling = benchmark_script("grounding_ceiling")
    config = json.loads((ROOT / "models" / "styo-mini" / "unet" / "config.json").read_text())
    assert ceiling.layer_sides(config) == [16, 8, 8, 8, 16, 16]  # DAAM leaves out the middle block
    bases, labels = ceiling.cell_bases([16, 8, 8, 8, 16, 16], 64)
    assert bases.shape == (256 + 64, 64 * 64)
    assert np.allclose(bases.sum(0), 1.0, atol=1e-5)  # every pixel: a full map gives heat 1
    half = np.zeros((64, 64), bool)
    half[:, :32] = True
    dot = np.zeros((64, 64), bool)
    dot[30:32, 20:23] = True
    big, small = (ceiling.best_pattern(m, bases, labels, [16, 8, 8, 8, 16, 16]) for m in (half, dot))
    assert big[1] >= big[0] and small[1] >= small[0]
    assert big[1] > 0.9 and small[1] < 0.5
    # cells between on and off trace the dot's edge finer than any on/off pattern, scored by the
    # measurement's own aggregation
    graded = ceiling.graded_pattern(dot, bases, small[2])
    assert graded.min() >= 0 and graded.max() <= 1
    assert ceiling.protocol_iou(graded, labels, [16, 8, 8, 8, 16, 16], dot) > small[1] + 0.03
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grounding_ceiling.py"), "--n", "4",
                          "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "grounding-ceiling.json").read_text())
    assert set(record["per_target"]) == set(ceiling.TARGETS)
    assert all(v["best"] >= v["coverage"] - 1e-9 for v in record["per_target"].values() if v["n"])
    assert "graded" in record["mean"] and "| graded |" in (tmp_path / "grounding-ceiling.md").read_text()
    assert "| eyes |" in (tmp_path / "grounding-ceiling.md").read_text()


@pytest.mark.skipif(not (ROOT / "models" / "styo-mini" / "model_index.json").is_file(), reason="no base model")
def test_portrait_encodings_compare_the_stylization_prompt_with_both_training_prompts():
    """The stylization prompt's `portrait` is compared with the source prompt's and the target
    prompt's: identical prompts give cosine 1 (identifiers made equal on purpose, so that the
    stylization prompt *is* the source or the target prompt), distinct ones less."""
    from types import SimpleNamespace

    from styo.testing import tiny_pipeline

    recombination = benchmark_script("recombination")
    pipe = tiny_pipeline()

    def config(s_src, s_tgt, c_src, c_tgt):
        return SimpleNamespace(ids=SimpleNamespace(s_src=s_src, s_tgt=s_tgt, c_src=c_src, c_tgt=c_tgt))

    as_source = recombination.portrait_encodings(pipe, config("aug", "aug", "sks", "m4a1"), n_s=1)
    as_target = recombination.portrait_encodings(pipe, config("ak47", "aug", "sks", "sks"), n_s=1)
    assert set(as_source) == set(recombination.ENCODINGS)
    assert as_source["portrait_cos_source"] == pytest.approx(1.0, abs=1e-3)
    assert as_target["portrait_cos_target"] == pytest.approx(1.0, abs=1e-3)
    unrounded = recombination.portrait_encodings(pipe, config("ak47", "aug", "sks", "m4a1"), n_s=3)
    assert all(-1 <= v < 0.9995 for v in unrounded.values())


def test_content_identifier_maps_share_the_heat_between_head_and_the_rest():
    """The recombination probe's map columns on the miniature model: a share of the identifier's
    heat on the judged head and the head's share of the picture, both proper fractions; nothing on
    the tiny pipeline, whose 16 px pictures the segmentation judge's masks do not fit."""
    from styo.idl import IDLConfig
    from styo.pipeline import load_pipeline
    from styo.testing import tiny_pipeline
    from styo.world.segmenter import load_segmenter

    recombination = benchmark_script("recombination")
    config = IDLConfig()
    found = recombination.content_identifier_maps(load_pipeline(ROOT / "models" / "styo-mini"), config,
                                                  load_segmenter(), steps=4, guidance=5.0, seeds=1)
    assert set(found) == set(recombination.MAPS)
    assert 0 <= found["c_src_on_head"] <= 1 and 0 < found["head_area"] < 1
    assert recombination.content_identifier_maps(tiny_pipeline(), config, load_segmenter(), steps=2,
                                                 guidance=5.0) == {}


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "benchmarks" / "results").glob("ablations*.json")))
def test_a_committed_study_is_what_its_script_writes_of_its_record(tmp_path, name):
    """Each committed study's Markdown is benchmarks/ablations.py's rendering of its JSON record,
    so no figure in it was typed or left behind by an older rendering."""
    results = ROOT / "benchmarks" / "results"
    record = json.loads((results / f"{name}.json").read_text())
    benchmark_script("ablations").write_results(record, tmp_path, name)
    assert (tmp_path / f"{name}.md").read_text() == (results / f"{name}.md").read_text()


@pytest.mark.skipif(not (ROOT / "models" / "styo-mini" / "model_index.json").is_file(), reason="no base model")
def test_attention_grounding_keeps_the_earlier_models_with_previous(tmp_path):
    """benchmarks/attention_grounding.py measures a model, and a second call with --previous adds
    another beside it: both rows, both commands, and both models' detailed results."""
    model = ROOT / "models" / "styo-mini"  # the world's captions need its tokenizer
    script = str(ROOT / "benchmarks" / "attention_grounding.py")
    common = ["--n", "2", "--steps", "2", "--n-train", "50"]
    first = subprocess.run([sys.executable, script, "--model", f"a={model}", *common, "--out-dir",
                            str(tmp_path / "one")], capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    earlier = tmp_path / "one" / "attention-grounding.json"
    second = subprocess.run([sys.executable, script, "--model", f"b={model}", *common, "--previous", str(earlier),
                             "--out-dir", str(tmp_path / "two"), "--name", "both"], capture_output=True, text=True,
                            timeout=600, check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    report = json.loads((tmp_path / "two" / "both.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["a", "b"]
    assert list(report["results"]) == ["a", "b"]
    assert report["results"]["a"] == json.loads(earlier.read_text())["results"]["a"]
    assert len(report["commands"]) == 2 and "--model a=" in report["commands"][0]
    # each recorded command names the options it ran with, so it reruns as it ran
    assert all("--steps 2" in c and "--n-train 50" in c for c in report["commands"])
    assert "--name both" in report["commands"][1] and "--seed" not in report["commands"][1]
    assert (tmp_path / "two" / "both.md").read_text().count("`benchmarks/attention_grounding.py") == 2
    assert report["n_train"] == 50
    # rows drawn from other captions do not join the table
    other = subprocess.run([sys.executable, script, "--model", f"c={model}", "--n", "2", "--steps", "2",
                            "--previous", str(earlier), "--out-dir", str(tmp_path / "three")],
                           capture_output=True, text=True, timeout=600, check=False)
    assert other.returncode != 0 and "--n-train" in other.stderr
    assert not (tmp_path / "three").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "benchmarks" / "results").glob("attention-grounding*.json")))
def test_a_committed_grounding_table_is_what_its_record_says(tmp_path, name):
    """Each committed attention-grounding table is the script's rendering of its JSON record."""
    results = ROOT / "benchmarks" / "results"
    record = json.loads((results / f"{name}.json").read_text())
    benchmark_script("attention_grounding").write_report(record, tmp_path, name)
    assert (tmp_path / f"{name}.md").read_text() == (results / f"{name}.md").read_text()


@pytest.mark.skipif(not (ROOT / "models" / "styo-mini" / "model_index.json").is_file(), reason="no base model")
def test_word_maps_on_renders_scores_the_shipped_models_maps_on_renders_and_its_own_pictures(tmp_path):
    """benchmarks/word_maps_on_renders.py: every region word scored on renders and on the model's
    own pictures, the eyes split by shape; the grounded model's hair map lands on rendered hair."""
    script = str(ROOT / "benchmarks" / "word_maps_on_renders.py")
    bad = subprocess.run([sys.executable, script, "--model", "a=x", "--t", "1000"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert bad.returncode != 0 and "--t in 0..999" in bad.stderr
    done = subprocess.run([sys.executable, script, "--model", f"v={ROOT / 'models' / 'styo-mini'}", "--n", "8",
                           "--n-own", "3", "--out-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "word-maps-on-renders.json").read_text())
    result = report["results"]["v"]
    assert sum(result["own_eye_shapes"].values()) == 3
    for where in ("renders", "own"):
        scores = result[where]
        shapes = [k for k in scores if k.startswith("eyes/")]
        assert shapes and {k.split("/")[1] for k in shapes} <= {"round", "narrow", "closed"}
        assert "eyes" in scores and all(0.0 <= v <= 1.0 for v in scores.values())
    assert result["renders"]["hair"] > 0.5
    assert report["command"] in (tmp_path / "word-maps-on-renders.md").read_text()


def test_texture_transfer_cost_times_each_size_and_projects_a_painted_set(tmp_path, capsys):
    cost = benchmark_script("texture_transfer_cost")
    for bad in ("64,x", "8", ""):  # refused with the option's name, nothing written
        with pytest.raises(SystemExit):
            cost.main(["--sizes", bad, "--out-dir", str(tmp_path)])
        assert "--sizes" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    cost.main(["--sizes", "16,32", "--repeats", "2", "--portraits", "4", "--out-dir", str(tmp_path)])
    record = json.loads((tmp_path / "texture-transfer-cost.json").read_text())
    rows = record["rows"]
    assert [r["size"] for r in rows] == [16, 32] and rows[0]["vs_first"] == 1
    for row in rows:
        assert row["seconds"] > 0 and row["run_minutes"] == pytest.approx(row["seconds"] * 4 / 60)
    assert rows[1]["vs_first"] == pytest.approx(rows[1]["seconds"] / rows[0]["seconds"])
    md = (tmp_path / "texture-transfer-cost.md").read_text()
    assert record["command"] in md and "| 32 |" in md and "target_aux=4" in md


def test_latent_side_cost_times_each_side_and_projects_the_runs(tmp_path, capsys):
    cost = benchmark_script("latent_side_cost")
    for bad in ("16,x", "4", "18", ""):  # refused with the option's name, nothing written
        with pytest.raises(SystemExit):
            cost.main(["--sides", bad, "--out-dir", str(tmp_path)])
        assert "--sides" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    cost.main(["--sides", "8,16", "--steps", "1", "--pretrain-batch", "2", "--out-dir", str(tmp_path)])
    record = json.loads((tmp_path / "latent-side-cost.json").read_text())
    rows = record["rows"]
    assert [r["side"] for r in rows] == [8, 16]
    for kind in ("idl_step", "sample_step", "pretrain_step"):
        assert rows[0][f"{kind}_vs_first"] == 1 and all(r[kind] > 0 for r in rows)
        assert rows[1][f"{kind}_vs_first"] == pytest.approx(rows[1][kind] / rows[0][kind])
    for row in rows:
        assert row["idl_run_s"] == pytest.approx(row["idl_step"] * 400)
        assert row["sampling_run_s"] == pytest.approx(row["sample_step"] * 25)
    md = (tmp_path / "latent-side-cost.md").read_text()
    assert record["command"] in md and "| 16 |" in md and "batch 2" in md
