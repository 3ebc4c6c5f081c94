"""The figures the README states are the committed measurements', so that a new measurement cannot
leave the front page behind: the shipped model's card, the book's timing, the study's draws."""

from __future__ import annotations

import json
import re
from pathlib import Path

from styo.book import results as R

ROOT = Path(__file__).parents[1]
README = " ".join((ROOT / "README.md").read_text().split())


def _json(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def _stated(pattern: str) -> list[float]:
    found = re.search(pattern, README)
    assert found, f"the README no longer says {pattern!r}"
    return [float(x) for x in found.groups()]


def test_the_book_time_is_the_committed_timing():
    timing = _json("benchmarks/results/book-timing.json")
    minutes, step_ms = _stated(r"`book_timing.py`; ([\d.]+) min .*? machine speed of (\d+) ms")
    assert minutes == round(timing["total_seconds"] / 60, 1)
    assert step_ms == round(timing["reference_step_ms"]["after"])
    assert timing["total_seconds"] <= timing["budget_seconds"]


def test_the_shipped_models_figures_are_its_card():
    metrics, grounding = _json("models/styo-mini/metrics.json"), _json("models/styo-mini/grounding.json")
    style, attributes, eyes, miou = _stated(
        r"captioned style ([\d.]+) of the time and the captioned attributes ([\d.]+) \(the eyes ([\d.]+)\)"
        r".*? mean IoU of ([\d.]+) by DAAM")
    assert style == metrics["style_accuracy"]
    assert attributes == round(metrics["mean_attribute_accuracy"], 2)
    assert eyes == metrics["attribute_accuracy"]["eyes"]
    assert miou == round(grounding["miou"], 2)


def test_the_limits_the_readme_names_are_the_measured_ones():
    metrics, grounding = _json("models/styo-mini/metrics.json"), _json("models/styo-mini/grounding.json")
    ceiling = _json("benchmarks/results/grounding-ceiling.json")["per_target"]["eyes"]
    drawn, traced, cells, graded = _stated(
        r"captioned in ([\d.]+) of the pictures, and their word map covers them with an IoU of ([\d.]+)\."
        r" A map made only of whole 16×16 latent cells could reach about ([\d.]+); a map with graded"
        r" cells, about ([\d.]+)")
    assert drawn == metrics["attribute_accuracy"]["eyes"]
    assert traced == round(grounding["miou_per_target"]["eyes"], 2)
    assert (cells, graded) == (round(ceiling["best"], 2), round(ceiling["graded"], 2))
    assert traced < 0.40 <= graded  # the stated gap: short of the target, which a graded map could reach


def test_the_studys_joint_scores_are_the_committed_draws():
    fingerprint = R.ablation_study()["model_fingerprint"]
    draws = {d["setting"]: d for d in R.idl_draws(fingerprint=fingerprint)}
    paper, painted = _stated(r"mean joint score is ([\d.]+) at the paper's settings and ([\d.]+) with the"
                             r" painted target-side set at n_s = 1")
    assert paper == round(draws["paper's IDL, n_s = 3"]["mean"], 2)
    assert painted == round(draws["painted set, n_s = 1"]["mean"], 2)
    recombined = {style: sum(d["recombined"].get(style, 0) for d in draws.values()) for style in ("halftone", "mosaic")}
    pairs = {style: sum(d["pairs"].get(style, 0) for d in draws.values()) for style in ("halftone", "mosaic")}
    # "about half of the halftone pairs and almost never in the mosaic ones"
    assert 0.4 <= recombined["halftone"] / pairs["halftone"] <= 0.6
    assert recombined["mosaic"] / pairs["mosaic"] < 0.05
