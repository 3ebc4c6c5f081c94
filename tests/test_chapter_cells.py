"""How a chapter is laid out: the Colab cell, the parameters cell, one short setup call, then
short cells; and the ``styo.book`` functions that keep them short (``setup`` on the tiny backend,
the chapters' verdicts and figures)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from styo.book import Chapter, auxiliary_set, backend_settings, settings_table, setup, showcase, toc
from styo.book import experiments as X
from styo.book import results as R
from styo.book.colab import install_cell
from styo.book.crossing import crossed_prompts
from styo.data import model_fingerprint
from styo.prompts import Identifiers
from styo.testing import tiny_pipeline

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = toc.notebooks(ROOT / "_toc.yml")
MAX_LINES = 15
# These two run no model of their backend (the world chapter builds its own parts, the appendix
# reads committed results): their first cell after the parameters is imports and a file read.
MODEL_FREE = {"book/world.ipynb", "book/appendix.ipynb"}


def code_cells(path: str) -> list[str]:
    nb = json.loads((ROOT / path).read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def is_parameters(path: str, source: str) -> bool:
    nb = json.loads((ROOT / path).read_text())
    return any("".join(c["source"]) == source and "parameters" in c["metadata"].get("tags", [])
               for c in nb["cells"])


# --- the chapters' cells -------------------------------------------------------------------------


@pytest.mark.parametrize("path", CHAPTERS)
def test_chapter_opens_with_colab_parameters_and_setup(path):
    cells = code_cells(path)
    assert cells[0] == install_cell(), f"{path}: the first code cell is not the Colab cell"
    assert is_parameters(path, cells[1]), f"{path}: the second code cell is not the parameters cell"
    if path not in MODEL_FREE:
        assert "setup(" in cells[2], f"{path}: the cell after the parameters does not call setup(...)"
    for later in cells[3:]:
        assert "setup(" not in later, f"{path}: setup(...) is called once, in the setup cell"


@pytest.mark.parametrize("path", CHAPTERS)
def test_every_chapter_cell_but_the_colab_cell_is_short(path):
    long = {i: len(src.splitlines()) for i, src in enumerate(code_cells(path)[1:], start=1)
            if len(src.splitlines()) > MAX_LINES}
    assert not long, f"{path}: code cells (by position) longer than {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("path", CHAPTERS)
def test_chapters_define_no_functions(path):
    """What a chapter would define (a plot, a verdict, a prompt table) lives in styo.book."""
    for src in code_cells(path)[1:]:
        assert not any(line.startswith("def ") for line in src.splitlines()), f"{path}: {src[:60]!r}"


def test_fcc_chapter_shows_copy_content_maps_not_a_processor_class():
    source = "\n".join(code_cells("book/fcc.ipynb"))
    assert "inspect.getsource(copy_content_maps)" in source
    assert "CrossAttnProcessor" not in source


# --- setup on the tiny backend ---------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYO_CACHE", str(tmp_path))
    return tmp_path


def test_setup_loads_only_what_a_chapter_asks_for(cache):
    ch = setup("tiny", pair=False, aux=False)
    assert isinstance(ch, Chapter)
    assert ch.pipe is not None and ch.tokenizer is ch.pipe.tokenizer
    assert (ch.pair, ch.pairs, ch.aux, ch.config, ch.base, ch.run, ch.judges) == (None,) * 7
    assert not ch.measured
    assert ch.pipe._progress_bar_config == {"disable": True}  # many short samplings, no bar each
    assert ch.size == 16
    assert not any(cache.iterdir())  # nothing generated, nothing trained


def test_setup_without_the_model_gives_the_same_tokenizer():
    ch = setup("tiny", model=False)
    assert ch.pipe is None
    text = "a drawing with aug not ak47 style of sks not m4a1 portrait"
    assert ch.tokenizer(text).input_ids == tiny_pipeline().tokenizer(text).input_ids


def test_setup_defaults_come_from_the_backend_and_the_parameters_cell_overrides_them():
    settings = backend_settings("tiny")
    ch = setup("tiny", model=False)
    assert (ch.strength, ch.sample_steps) == (settings.strength, settings.sample_steps)
    ch = setup("tiny", model=False, strength=0.5, sample_steps=2)
    assert (ch.strength, ch.sample_steps) == (0.5, 2)
    assert ch.sampling(seed=3) == {"num_inference_steps": 2, "guidance_scale": settings.guidance, "seed": 3}


def test_setup_trains_the_shared_run_once_then_loads_it(cache, capsys):
    ch = setup("tiny", idl_steps=2, idl=True, keep_base=True)
    assert ch.config.steps == 2 and len(ch.run.losses) == 2
    assert "IDL: 2 steps, trained into" in capsys.readouterr().out
    tuned = model_fingerprint(ch.pipe)
    assert tuned != model_fingerprint(tiny_pipeline())
    X.restore_weights(ch.pipe, ch.base)  # the snapshot is of the weights before IDL
    assert model_fingerprint(ch.pipe) == model_fingerprint(tiny_pipeline())

    again = setup("tiny", idl_steps=2, idl=True)
    assert f"IDL: 2 steps, loaded from {again.run.output_dir}" in capsys.readouterr().out
    assert model_fingerprint(again.pipe) == tuned


def test_setup_refuses_idl_without_its_inputs(cache):
    with pytest.raises(ValueError, match="idl_steps"):
        setup("tiny", idl=True)
    with pytest.raises(ValueError, match="auxiliary set"):
        setup("tiny", idl_steps=2, idl=True, aux=False)


def test_setup_judges_only_pairs_with_known_attributes(cache, tmp_path):
    ch = setup("tiny", aux=False, judges=True)
    assert ch.measured and ch.pair.source_attributes
    face = tmp_path / "face.png"
    Image.new("RGB", (20, 20), (200, 150, 120)).save(face)
    ch = setup("tiny", aux=False, judges=True, source_path=face)
    assert ch.judges is None and not ch.measured  # a reader's own image has no ground truth


def test_setup_with_pair_seeds_gives_the_ablation_pairs_example_first(cache):
    ch = setup("tiny", aux=False, pair_seeds=[1, 8], target_styles=["halftone"])
    assert list(ch.pairs) == ["pair 1 (photo → halftone)", "pair 2 (sketch → halftone)",
                              "pair 3 (cartoon → halftone)"]
    assert ch.pair is ch.pairs["pair 1 (photo → halftone)"]
    assert ch.pair.target_style == "halftone" and ch.aux is None and ch.aux_by_style is None


def test_setup_draws_an_auxiliary_set_in_each_source_style_of_the_pairs(cache):
    ch = setup("tiny", pair_seeds=[1])
    assert list(ch.aux_by_style) == ["photo", "sketch"] and ch.aux is ch.aux_by_style["photo"]
    photo, sketch = ch.aux_by_style["photo"], ch.aux_by_style["sketch"]
    assert len(photo) == len(sketch) == ch.settings.aux_count
    assert [np.asarray(a).tolist() for a in photo] != [np.asarray(a).tolist() for a in sketch]
    keys = [json.loads(f.read_text())["prompt"] for f in sorted((cache / "aux").glob("aux-*/key.json"))]
    assert sorted(keys) == ["a drawing with photo style of portrait", "a drawing with sketch style of portrait"]
    assert setup("tiny", pair_seeds=None).aux_by_style is None  # one pair: the profile's one set
    with pytest.raises(ValueError, match="leave style unset"):
        auxiliary_set(ch.pipe, backend_settings("sd15", "sd"), style="sketch")


def test_a_rendered_auxiliary_set_draws_many_faces_in_each_source_style(cache):
    from styo.book import auxiliary_sets, rendered_auxiliary_set
    from styo.book.chapters import RENDERED_AUX_SEED
    from styo.world.render import render_seed

    photo = rendered_auxiliary_set("photo", 6, 64)
    assert all(im.size == (64, 64) for im in photo)
    assert len({np.asarray(im).tobytes() for im in photo}) == 6  # six different portraits
    # portrait i is the renderer's drawing of seed RENDERED_AUX_SEED + i, repeatably
    assert [np.asarray(im).tolist() for im in photo[:2]] == [
        np.asarray(render_seed(RENDERED_AUX_SEED + i, "photo")[0]).tolist() for i in range(2)]
    sketch = rendered_auxiliary_set("sketch", 6, 64)
    assert [np.asarray(a).tolist() for a in sketch] != [np.asarray(a).tolist() for a in photo]
    ch = setup("tiny", pair_seeds=[1], aux=False)
    sets = auxiliary_sets(ch.pipe, ch.settings, ch.pairs.values(), rendered=True)
    assert list(sets) == ["photo", "sketch"]
    assert all(len(s) == ch.settings.aux_count and s[0].size == (ch.size, ch.size) for s in sets.values())
    assert not list((cache / "aux").glob("aux-*"))  # nothing generated by the model
    with pytest.raises(ValueError, match="unknown style 'oil'"):
        rendered_auxiliary_set("oil", 2, 64)
    sd15 = backend_settings("sd15", "sd")
    with pytest.raises(ValueError, match="miniature world's renderer"):
        auxiliary_sets(ch.pipe, sd15, [ch.pair], rendered=True)


def test_chapter_generate_is_repeatable_per_seed(cache):
    ch = setup("tiny", pair=False, aux=False)
    a, b = ch.generate("a drawing of portrait", [0, 1]), ch.generate("a drawing of portrait", [0, 1])
    assert [np.asarray(x).tolist() for x in a] == [np.asarray(x).tolist() for x in b]
    assert np.asarray(a[0]).tolist() != np.asarray(a[1]).tolist()  # each seed its own noise
    other = ch.generate("a drawing of portrait", [0], guidance=7.0)
    assert np.asarray(other[0]).tolist() != np.asarray(a[0]).tolist()


def test_settings_table_has_a_column_per_backend_and_a_line_per_setting():
    table = settings_table({"mini": backend_settings("mini"), "tiny": backend_settings("tiny")})
    lines = table.splitlines()
    assert lines[0].split() == ["mini", "tiny"]
    assert len(lines) == 1 + 11
    assert lines[2].split()[-2:] == [str(backend_settings("mini").idl.steps), "4"]  # IDL steps


# --- the chapters' verdicts ------------------------------------------------------------------------


def _row(**values):
    return {"content": 0.5, "style": 0.5, "leak": 0.1, "other_style": 0.1, **values}


def test_window_verdict_names_the_best_windows():
    same = [_row(control_steps=(0.0, 0.0)), _row(control_steps=(0.0, 1.0))]
    assert X.window_verdict(same) == "The judges see no difference in content between the windows."
    rows = [_row(control_steps=(0.0, 0.0), content=0.4), _row(control_steps=(0.0, 0.5), content=0.9, style=0.2),
            _row(control_steps=(0.0, 1.0), content=0.6, style=0.7)]
    text = X.window_verdict(rows)
    assert "window (0.0, 0.5) (0.90, against 0.40 without control)" in text
    assert "strongest with (0.0, 1.0) (0.70)" in text and "a trade-off" in text
    rows[1]["style"] = 0.8
    assert X.window_verdict(rows).endswith("The same window wins both.")


def test_depth_verdict_pairs_each_strength_with_and_without_fcc():
    depth = [_row(fcc=False, strength=s, content=c) for s, c in ((0.6, 0.5), (1.0, 0.2))]
    depth += [_row(fcc=True, strength=s, content=c) for s, c in ((0.6, 0.55), (1.0, 0.6))]
    text = X.depth_verdict(depth, [0.6, 1.0])
    assert "0.6: +0.05, 1.0: +0.40" in text and "largest at strength 1.0" in text
    flat = [_row(fcc=f, strength=s) for f in (False, True) for s in (0.6, 1.0)]
    assert X.depth_verdict(flat, [0.6, 1.0]).endswith("FCC gains nothing at any depth in this run.")
    fig = X.plot_by_strength(depth)
    assert [ax.get_title() for ax in fig.axes] == ["content", "leak", "style"]


def test_sharpness_markdown_reads_flat_maps_with_the_measured_gain():
    flat = {"entropy": 0.95, "max_prob": 0.02, "padding_mass": 0.7}
    assert "**nearly uniform**" in X.sharpness_markdown(flat, None, 3)
    assert "Yet FCC raised content fidelity by +0.20" in X.sharpness_markdown(flat, 0.2, 3)
    assert "a small effect" in X.sharpness_markdown(flat, 0.01, 3)
    sharp = {"entropy": 0.5, "max_prob": 0.3, "padding_mass": 0.01}
    peaked = X.sharpness_markdown(sharp, 0.2, 3)
    assert "**peaked**" in peaked and "a layout to hand over, and it did: content fidelity rose by +0.20" in peaked
    assert "changed by only +0.02" in X.sharpness_markdown(sharp, 0.02, 3)
    assert X.sharpness_markdown(sharp, None, 3).endswith("a layout to hand over.")


def test_encodings_verdict_reads_the_three_outcomes():
    off = {"content": 0.4, "leak": 0.5, "style": 0.8}
    on = {"content": 0.45, "leak": 0.45, "style": 0.8}
    traded = X.encodings_verdict(off, on, {"content": 0.7, "leak": 0.2, "style": 0.5})
    assert "content fidelity **rises** (0.45 → 0.70; without FCC 0.40)" in traded
    assert "**falls** (0.80 → 0.50)" in traded and "part of the style goes" in traded
    assert "most of the style goes" in X.encodings_verdict(off, on, {"content": 0.9, "leak": 0.1, "style": 0.1})
    free = X.encodings_verdict(off, on, {"content": 0.7, "leak": 0.2, "style": 0.8})
    assert free.endswith("at no cost in style.")
    # 0.451 prints as 0.45: no rise, whatever the style does
    assert "was not what kept" in X.encodings_verdict(off, on, {"content": 0.451, "leak": 0.45, "style": 0.5})


def test_plain_prompt_verdict_at_half_the_distance():
    assert "mostly undoes" in X.plain_prompt_verdict(0.2, 0.05)
    assert "does more than undo" in X.plain_prompt_verdict(0.2, 0.15)


def test_repetition_claims_average_over_the_other_knob():
    grid = [_row(n_s=a, n_c=b, style=0.2 * a, content=0.9 - 0.1 * a) for a in (1, 3) for b in (1, 3)]
    assert X.trend(grid, "style", "n_s", [1, 3]) == pytest.approx([0.2, 0.6])
    text = X.repetition_claims(grid, [1, 3], [1, 3])
    assert "*a larger n_s stylizes more*: **holds**" in text
    assert "*a larger n_c keeps more of the source*: **does not hold**" in text
    assert "Stylizing harder **costs** content" in text


def test_best_cells_keep_each_pairs_highest_row_and_the_first_on_a_tie():
    grid = [_row(pair="a", n_s=1, joint=0.25), _row(pair="a", n_s=2, joint=0.75),
            _row(pair="a", n_s=3, joint=0.75), _row(pair="b", n_s=1, joint=0.0),
            _row(pair="b", n_s=2, joint=0.0)]
    best = X.best_cells(grid)
    assert {p: r["n_s"] for p, r in best.items()} == {"a": 2, "b": 1}
    assert X.best_cells(grid, "n_s")["a"]["n_s"] == 3


def test_augmentation_markdown_compares_row_by_row():
    inference = [_row(n_s=3, n_c=1, style=0.3)]
    training = [_row(n_s=3, n_c=1, style=0.6, content=0.4)]
    text = X.augmentation_markdown(inference, training)
    assert text.startswith("- (3, 1)")
    assert "probability **rises** (0.30 → 0.60)" in text and "content fidelity **falls**" in text


def test_recorded_study_applies_only_to_this_model_strength_and_guidance():
    assert "No larger study" in X.recorded_study_markdown(None, "f", 0.7)
    study = {"model_fingerprint": "f", "date": "d", "model": "m", "stylization": {"strength": 0.7},
             "means": [], "pairs": ["a", "b"], "idl": {"steps": 400}, "n_images": 4, "seconds": 600,
             "claims": []}
    assert "measured another model" in X.recorded_study_markdown(study, "g", 0.7)
    assert "another strength (0.7, this page 0.8)" in X.recorded_study_markdown(study, "f", 0.8)
    assert X.recorded_study_markdown(study, "f", 0.7, guidance=10.0).startswith("2 pairs")  # not recorded
    study["stylization"]["guidance"] = 5.0
    assert "another guidance (5, this page 10)" in X.recorded_study_markdown(study, "f", 0.7, guidance=10.0)
    assert X.recorded_study_markdown(study, "f", 0.7, guidance=5.0).startswith("2 pairs")
    assert X.recorded_study_markdown(study, "f", 0.7).startswith("2 pairs, IDL 400 steps, 4 images")
    assert "Targets" not in X.recorded_study_markdown(study, "f", 0.7)  # a study from before the targets
    study["targets"] = {
        "means": {"joint": 0.65, "style": 0.5}, "targets": {"joint": 0.6, "style": 0.7},
        "met": {"joint": True, "style": False, "geometry above no FCC on most pairs": True},
        "fcc_geometry_wins": 2, "per_pair": [
            {"pair": "a", "joint": 0.5, "style": 0.4, "geometry without FCC": 0.5},
            {"pair": "b", "joint": 0.8, "style": 0.6, "geometry without FCC": 0.6}]}
    text = X.recorded_study_markdown(study, "f", 0.7)
    assert "- joint 0.65 (target ≥ 0.6): **met**" in text and "- style 0.50 (target ≥ 0.7): **not met**" in text
    assert "in 2 of 2 pairs: **met**" in text and "| b | 0.80 | 0.60 | 0.60 |" in text
    assert "as the paper runs it" not in text  # a study without --paper-strength
    assert "For scale" not in text  # a study from before the ideal was scored
    study["ideal"] = {"means": {"joint": 0.5, "style": 1.0, "content": 0.9, "geometry": 0.95},
                      "per_pair": [{"pair": "a", "joint": 1.0}, {"pair": "b", "joint": 0.0}]}
    text = X.recorded_study_markdown(study, "f", 0.7)
    assert "scores joint 0.50 over 2 pairs (the lowest 0.00, b); style 1.00, content 0.90 and geometry 0.95" in text
    assert "cannot count as recombined" in text and "not the scores'" not in text
    study["ideal"]["per_pair"][1]["joint"] = 1.0
    text = X.recorded_study_markdown(study, "f", 0.7)
    assert "joint 1.00 on every one of the 2 pairs" in text and "the method's shortfall, not the scores'" in text
    means = [{"strength": s, "fcc": f, "joint": j, "geometry": g, "n": 2}
             for s, f, j, g in ((0.7, False, 0.1, 0.8), (0.7, True, 0.25, 0.8), (1.0, False, 0.0, 0.5),
                                (1.0, True, 0.0, 0.6))]
    study["strengths"] = {"profile": 0.7, "paper": 1.0, "means": means, "pairs": 2, "better": 0.7,
                          "fcc_geometry_wins": {"0.7": 0, "1.0": 2}}
    text = X.recorded_study_markdown(study, "f", 0.7)
    assert "as the paper runs it (strength 1.0: both branches from the same noise)" in text
    assert "- strength 1.0: with FCC, joint 0.00 and geometry 0.60; FCC raises the geometry in 2 of 2 pairs" in text
    assert "**the profile's strength 0.7 measures better than the paper's 1.0**" in text
    assert "| 1.00 | on | 0.60 | 0.00 |" in text  # geometry, then joint
    assert "Which identifier carries what" not in text  # a study without --crossing
    assert "text encodings of the content words" not in text  # a study without --content-encodings
    study["content_encodings"] = {"pairs": 2, "geometry_wins": {"FCC": 1, "FCC + content encodings": 2},
                                  "content_wins": {"FCC": 0, "FCC + content encodings": 2}, "means": [
        {"control": c, "content": k, "style": 0.5, "n": 2}
        for c, k in (("no FCC", 0.4), ("FCC", 0.4), ("FCC + content encodings", 0.7))]}
    text = X.recorded_study_markdown(study, "f", 0.7)
    assert "| FCC + content encodings | 0.70 | 0.50 |" in text
    assert "- FCC + content encodings raises the content above sampling without FCC in 2 of 2 pairs, the geometry in 2" in text
    clean = {"style_by_style_ids": 1.0, "face_by_content_ids": 0.9, "style_by_content_ids": 0.0,
             "face_by_style_ids": 0.1}
    study["crossing"] = {"images": 8, "effects": {
        "contrastive + aux": {"a": clean, "b": {**clean, "face_by_content_ids": 0.2}}}}
    text = X.recorded_study_markdown(study, "f", 0.7)
    assert "Which identifier carries what" in text and "(8 pictures per prompt" in text
    assert "| contrastive + aux | +1.00 | +0.55 | +0.00 | +0.10 | 2 |" in text
    assert "carried by the content identifiers in 1 of 2 pairs, by the style identifiers in 0, by neither in 1" in text
    assert "n_s × n_c grid" not in text  # a study without --grid-pairs
    assert "depths of the diffused source" not in text  # a study without --strength-sweep
    study["strength_sweep"] = {"profile": 0.7, "pairs": 2, "means": [
        {"strength": s, "fcc": f, "joint": j, "style": 0.5, "n": 2}
        for s, f, j in ((0.5, False, 0.1), (0.5, True, 0.2), (0.7, False, 0.3), (0.7, True, 0.25))]}
    text = X.recorded_study_markdown(study, "f", 0.7)
    assert "| 0.50 | on | 0.50 | 0.20 |" in text  # style, then joint
    assert "with FCC, the joint score by strength: 0.5: 0.20, 0.7: 0.25 (from 0.20 to 0.25)." in text
    study["grid"] = [{"pair": p, "n_s": a, "n_c": b, "joint": 0.5 if (p, a, b) == ("a", 1, 3) else 0.0}
                     for p in ("a", "b") for a in (1, 3) for b in (1, 3)]
    study["grid_means"] = [{"n_s": a, "n_c": b, "style": 0.2 * a, "content": 0.5 - 0.05 * b, "joint": 0.1}
                           for a in (1, 3) for b in (1, 3)]
    text = X.recorded_study_markdown(study, "f", 0.7)
    assert "n_s × n_c grid on the full variant's runs of 2 pairs" in text
    assert "| 3 | 1 | 0.45 | 0.60 | 0.10 |" in text  # content, style, joint: the columns it holds
    assert "*a larger n_s stylizes more*: **holds**" in text
    assert "*a larger n_c keeps more of the source*: **does not hold** here. Mean content by n_c: 1: 0.45, 3: 0.35" in text
    assert ("- At best: the grid's best cell for every pair (n_s = 1, n_c = 1) reads joint 0.10; each pair's own "
            "best cell, chosen after the fact by the judges, reads 0.25, and in 1 of 2 pairs no picture passes in "
            "any cell.") in text


def test_pair_grid_titles_the_first_row_only():
    img = Image.new("RGB", (8, 8))

    class Pair:
        source = target = img

    fig = X.pair_grid({"p1": Pair(), "p2": Pair()}, {"p1": [img] * 3, "p2": [img] * 3}, ["a", "b", "c"])
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 * 5
    assert titles[:5] == ["source", "target", "a", "b", "c"] and set(titles[5:]) == {""}


# --- the chapters' figures and measurements -------------------------------------------------------


def test_pixel_spread():
    black, white = Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), (255, 255, 255))
    assert showcase.pixel_spread([black, black]) == 0.0
    assert showcase.pixel_spread([black, white]) == 255.0
    assert math.isnan(showcase.pixel_spread([black]))


def test_identifier_grid_draws_every_prompt_with_the_same_seeds():
    calls = []

    def generate(prompt, seeds):
        calls.append((prompt, list(seeds)))
        return [Image.new("RGB", (8, 8))] * len(seeds)

    fig = showcase.identifier_grid(generate, Identifiers(), [0, 1], "t")
    assert [c[1] for c in calls] == [[0, 1]] * 4
    assert [c[0] for c in calls] == list(crossed_prompts(Identifiers()).values())
    assert len(fig.axes) == 2 * 4 and fig._suptitle.get_text() == "t"


def test_plot_idl_losses_smooths_over_a_twentieth_of_the_run():
    losses = list(np.linspace(1, 0, 40))
    fig = showcase.plot_idl_losses(losses, {"src": losses, "tgt": losses})
    raw, mean = fig.axes[0].lines
    assert len(raw.get_xdata()) == 40 and len(mean.get_xdata()) == 40 - 2 + 1
    assert len(fig.axes[1].lines) == 2


def test_latent_channel_image_stretches_to_the_full_range():
    image = showcase.latent_channel_image(torch.linspace(-3, 5, 16).reshape(4, 4))
    values = np.asarray(image)
    assert image.mode == "L" and values.min() == 0 and values.max() == 255


def test_describe_pipeline_and_the_base_model_figures(capsys):
    pipe = tiny_pipeline()
    showcase.describe_pipeline(pipe, "tiny")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("StableDiffusionPipeline from tiny, 16×16 pictures")
    assert [line.split()[0] for line in out[1:]] == ["vae", "text_encoder", "unet", "tokenizer", "scheduler"]
    layers = showcase.cross_attention_layers(pipe)
    fig = showcase.plot_layer_sides(layers)
    assert len(fig.axes[0].lines[0].get_xdata()) == len(layers)
    fig = showcase.plot_noise_schedule(pipe.scheduler.alphas_cumprod, [0, 500, 999])
    assert len(fig.axes[0].lines) == 2


# --- the appendix's views --------------------------------------------------------------------------


@pytest.fixture
def shown(monkeypatch):
    import IPython.display

    out = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: out.append(obj.data))
    return out


def test_show_book_timing_says_how_to_measure_when_nothing_is_recorded(shown):
    R.show_book_timing(None)
    assert shown == ["The book has not been timed yet: run `python benchmarks/book_timing.py`."]


def test_show_book_timing_against_the_budget(shown):
    timing = {"date": "d", "machine": "m", "cache": "cold", "total_seconds": 1200, "budget_seconds": 900,
              "chapters": [{"chapter": "book/intro.ipynb", "seconds": 600},
                           {"chapter": "book/fcc.ipynb", "seconds": 600}]}
    R.show_book_timing(timing)
    assert "| intro |" in shown[0] and "| **total** |" in shown[0]
    assert shown[-1] == "The whole book took 20.0 min: **over** the 15-minute budget."


def test_show_run_on_the_committed_smoke_run(shown):
    runs = R.benchmark_runs(R.RESULTS, kind="smoke")
    if not runs:
        pytest.skip("no smoke run committed")
    R.show_run(runs[0])
    assert shown[0].startswith(f"`{runs[0]['file']}`")
    assert any("| profile |" in text for text in shown)
    assert any("| target |" in text for text in shown)


def test_study_names_what_the_full_method_made_of_each_pair():
    per_pair = [{"pair": "a", "joint": 0.75, "style": 0.9, "content": 0.9, "geometry": 0.9},
                {"pair": "b", "joint": 0.25, "style": 0.3, "content": 0.9, "geometry": 0.9},
                {"pair": "c", "joint": 0.0, "style": 1.0, "content": 0.1, "geometry": 0.5},
                {"pair": "d", "joint": 0.0, "style": 0.5, "content": 0.8, "geometry": 0.9}]
    assert R.pair_outcomes(per_pair) == {R.RECOMBINED: ["a"], R.NOT_TARGET_STYLE: ["b"], R.FACE_LOST: ["c", "d"]}
    # with the rows' style shares, a pair not in the target style is split by what it was read as
    rows = [{"pair": p, "source_style": s, "other_style": o}
            for p, s, o in [("a", 0.0, 0.1), ("b", 0.1, 0.6), ("c", 0.0, 0.0), ("d", 0.5, 0.0)]]
    assert R.pair_outcomes(per_pair, rows) == {R.RECOMBINED: ["a"], R.UNSTYLED: [], R.THIRD_STYLE: ["b"],
                                               R.FACE_LOST: ["c", "d"]}
    rows[1] = {**rows[1], "source_style": 0.7}
    assert R.pair_outcomes(per_pair, rows)[R.UNSTYLED] == ["b"]
    assert R.NOT_TARGET_STYLE in R.pair_outcomes(per_pair, rows[:3])  # a pair without its shares: no split
    targets = {"means": {"joint": 0.25}, "targets": {"joint": 0.6}, "met": {
        "joint": False, "geometry above no FCC on most pairs": False}, "fcc_geometry_wins": 1,
        "per_pair": [{**r, "geometry without FCC": 0.8} for r in per_pair]}
    text = R.study_targets_markdown(targets)
    assert "- recombined (1 of 4): a\n" in text and "- styled without the source's face (2 of 4): c, d" in text
    assert "Pair by pair" not in R.study_targets_markdown(targets, per_pair=False)
