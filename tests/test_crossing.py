"""Crossing the identifiers: the prompts, and the effects read by the real judges from pictures
whose answer is known (a stand-in pipeline that draws world renders by the prompt's identifiers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from styo.book import crossing as K
from styo.book import experiments as X
from styo.prompts import (
    Identifiers,
    crossed_prompt,
    source_prompt,
    stylization_prompt,
    target_prompt,
)

IDS = Identifiers()


def test_crossed_prompts_are_the_training_prompts_and_their_two_crossings():
    for negative in (True, False):
        prompts = K.crossed_prompts(IDS, negative)
        assert list(prompts) == [("source", "source"), ("source", "target"),
                                 ("target", "source"), ("target", "target")]
        assert prompts[("source", "source")] == source_prompt(IDS, negative)
        assert prompts[("target", "target")] == target_prompt(IDS, negative)
        assert prompts[("target", "source")] == stylization_prompt(IDS, 1, 1, negative)
        assert len(set(prompts.values())) == 4
    assert crossed_prompt(IDS, "source", "target", negative=False) == (
        f"a drawing with {IDS.s_src} style of {IDS.c_tgt} portrait")
    with pytest.raises(ValueError, match="'source' or 'target'"):
        crossed_prompt(IDS, "src", "target")


def test_the_negatives_make_the_two_training_prompts_anagrams():
    from styo.testing import tiny_pipeline

    tokenizer = tiny_pipeline().tokenizer
    assert K.same_words(tokenizer, IDS, negative=True)
    assert not K.same_words(tokenizer, IDS, negative=False)


class _DrawsByIdentifiers:
    """A stand-in pipeline that draws world renders: the style of the image whose identifier comes
    first in the style phrase, and the face of the image whose identifier comes first in the
    content phrase (``split``), or both by the style phrase (the split that failed)."""

    def __init__(self, pair, split: bool):
        self.pair, self.split = pair, split

    def __call__(self, prompt, *, num_images_per_prompt, generator, **_):
        from styo.world.render import render

        words = prompt.split()
        style_source = words[words.index("with") + 1] == IDS.s_src
        face_source = words[words.index("of") + 1] == IDS.c_src if self.split else style_source
        style = self.pair.source_style if style_source else self.pair.target_style
        face = self.pair.source_attributes if face_source else self.pair.target_attributes
        seed = int(generator.initial_seed())
        return SimpleNamespace(images=[render(face, style, seed + i, layout="varied")
                                       for i in range(num_images_per_prompt)])


@pytest.fixture(scope="module")
def judged_pair():
    from styo.world.judges import load_judges

    source, target = X.contrasting_attributes(3)
    pair = SimpleNamespace(source_attributes=source, target_attributes=target,
                           source_style="photo", target_style="mosaic")
    return load_judges(), pair


def test_a_clean_split_reads_style_from_the_style_ids_and_the_face_from_the_content_ids(judged_pair):
    judges, pair = judged_pair
    out = K.cross_identifiers(_DrawsByIdentifiers(pair, split=True), pair, judges=judges, num_images=3)
    assert set(out.images) == set(out.scores) == set(K.crossed_prompts(IDS))
    assert all(len(v) == 3 for v in out.images.values())
    e = out.effects
    assert e["style_by_style_ids"] > 0.9 and e["face_by_content_ids"] > 0.8
    assert abs(e["style_by_content_ids"]) < 0.1 and abs(e["face_by_style_ids"]) < 0.1
    assert K.carriers(e) == {"style": "style identifiers", "face": "content identifiers"}
    # the stylization corner: the target's style with the source's face
    corner = out.scores[("target", "source")]
    assert corner["style"] > 0.9 and corner["content"] > 0.8


def test_a_failed_split_shows_the_style_ids_carrying_the_face(judged_pair):
    judges, pair = judged_pair
    e = K.cross_identifiers(_DrawsByIdentifiers(pair, split=False), pair, judges=judges,
                            num_images=3).effects
    assert e["face_by_style_ids"] > 0.8 and abs(e["face_by_content_ids"]) < 0.1
    assert K.carriers(e) == {"style": "style identifiers", "face": "style identifiers"}


def test_effects_and_summary_from_known_scores():
    def cells(style, face):  # style/face of each (style ids, content ids) cell
        return {(s, c): {"style": style[(s, c)], "content": face[(s, c)]}
                for s in K.ROLES for c in K.ROLES}

    by_style = {("source", "source"): 0.0, ("source", "target"): 0.0,
                ("target", "source"): 1.0, ("target", "target"): 1.0}
    by_content = {("source", "source"): 1.0, ("target", "source"): 1.0,
                  ("source", "target"): 0.0, ("target", "target"): 0.0}
    clean = K.crossing_effects(cells(by_style, by_content))
    assert clean == {"style_by_style_ids": 1.0, "face_by_content_ids": 1.0,
                     "style_by_content_ids": 0.0, "face_by_style_ids": 0.0}
    nothing = K.crossing_effects(cells(dict.fromkeys(by_style, 0.5), dict.fromkeys(by_style, 0.5)))
    assert K.carriers(nothing) == {"style": "neither", "face": "neither"}
    failed = K.crossing_effects(cells(by_style, {k: 1.0 - v for k, v in by_style.items()}))
    summary = K.crossing_summary({"a": {"p1": clean, "p2": failed}})["a"]
    assert summary["pairs"] == 2 and summary["means"]["face_by_content_ids"] == 0.5
    assert summary["carriers"]["face"] == {"content identifiers": 1, "style identifiers": 1}
    text = K.crossing_markdown({"a": {"p1": clean, "p2": failed}})
    assert "| a | +1.00 | +0.50 | +0.00 | +0.50 | 2 |" in text
    assert "content identifiers in 1 of 2 pairs, by the style identifiers in 1" in text


def test_crossing_a_real_pipeline_is_deterministic_in_its_seed():
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from styo.testing import tiny_pipeline

    pipe = tiny_pipeline()
    kwargs = dict(num_images=2, num_inference_steps=2, guidance_scale=1.0)
    out = K.cross_identifiers(pipe, None, **kwargs)
    assert out.scores == {} and out.effects == {}  # no judges, nothing scored
    again = K.cross_identifiers(pipe, None, **kwargs)
    pixels = {cell: [np.asarray(im) for im in images] for cell, images in out.images.items()}
    for cell, images in again.images.items():
        assert all((np.asarray(a) == b).all() for a, b in zip(images, pixels[cell], strict=True))
    # the two images of one prompt differ (each its own noise); the prompt is what differs between cells
    assert not (pixels[("source", "source")][0] == pixels[("source", "source")][1]).all()
    fig = K.crossing_grid(out)
    assert len([ax for ax in fig.axes if ax.images]) == 4
