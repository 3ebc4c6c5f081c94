"""Judges: API shapes, save/load, determinism, file handling, and the shipped judges' accuracy.

The fast tests train a tiny throwaway judge (a few seconds on CPU). The accuracy tests use the
shipped ``models/judges`` and are skipped when it is absent; they judge 350 fresh renders (50 per
style) from :data:`FRESH_SEED_BASE`, a seed range used neither by judge training, judge
evaluation nor pretraining. The targets are style ≥ 95 % and each attribute ≥ 90 % on
thousands of renders (``models/judges/metrics.json``); on 350 images one attribute's binomial
standard error near 92 % is ~1.5 points, so these tests assert each attribute ≥ 85 % (about
three standard errors of slack) and style ≥ 95 %.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from styo.data import ImageInputError
from styo.world.attributes import ATTRIBUTES, STYLES
from styo.world.judges import (
    DEFAULT_JUDGES,
    FRESH_SEED_BASE,
    MAX_JUDGE_SEED,
    attribute_agreement,
    content_fidelity,
    eval_seed_range,
    judge_files,
    load_judges,
    style_fidelity,
    to_judge_tensor,
    train_judges,
    train_seed_range,
)
from styo.world.render import render, render_seed

TINY = dict(n_images=192, epochs=1, n_eval=70, batch_size=64, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[object, dict]:
    out = tmp_path_factory.mktemp("judges")
    metrics = train_judges(out, seed=0, **TINY)
    return out, metrics


def _renders(n: int, start: int = FRESH_SEED_BASE) -> tuple[list[Image.Image], list[str], list]:
    images, styles, attrs = [], [], []
    for i in range(n):
        img, style, a = render_seed(start + i, style=STYLES[i % len(STYLES)])
        images.append(img)
        styles.append(style)
        attrs.append(a)
    return images, styles, attrs


def test_seed_ranges_are_disjoint():
    train = train_seed_range(0, 40_000)
    evals = eval_seed_range(0, 7_000)
    pretrain_max = 100 * 10_000_000  # pretraining seed s uses s * 10_000_000 + i
    assert train.start >= pretrain_max and evals.start >= train.stop
    assert train_seed_range(MAX_JUDGE_SEED, 1).start <= eval_seed_range(0, 1).start
    assert eval_seed_range(MAX_JUDGE_SEED, 1).start <= FRESH_SEED_BASE
    with pytest.raises(ValueError, match="seed"):
        train_judges("unused", seed=MAX_JUDGE_SEED + 1)


def test_predict_shapes_and_probabilities(tiny):
    out, metrics = tiny
    judges = load_judges(out)
    images, _, _ = _renders(3)
    preds = judges.predict(images)
    assert len(preds) == 3
    for p in preds:
        assert set(p["style"]) == set(STYLES)
        assert sum(p["style"].values()) == pytest.approx(1.0, abs=1e-5)
        assert list(p["attributes"]) == list(ATTRIBUTES)
        for name, values in ATTRIBUTES.items():
            assert p["attributes"][name] in values
            assert set(p["attribute_probs"][name]) == set(values)
            assert sum(p["attribute_probs"][name].values()) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= metrics["style_accuracy"] <= 1.0
    assert set(metrics["attribute_accuracy"]) == set(ATTRIBUTES)
    assert set(metrics["per_style"]) == set(STYLES)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["style_accuracy"] == pytest.approx(metrics["style_accuracy"])


def test_input_formats_agree(tiny):
    judges = load_judges(tiny[0])
    images, _, _ = _renders(2)
    arr = np.stack([np.asarray(im) for im in images])  # uint8 NHWC
    ref = judges.probabilities(images)["style"]
    as_float01 = judges.probabilities(arr.astype(np.float32) / 255.0)["style"]
    as_tensor = judges.probabilities(torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert torch.allclose(judges.probabilities(arr)["style"], ref, atol=1e-6)
    assert torch.allclose(as_float01, ref, atol=1e-5)
    assert torch.allclose(as_tensor["style"], ref, atol=1e-5)
    big = [im.resize((128, 128), Image.NEAREST) for im in images]
    assert to_judge_tensor(big).shape == (2, 3, 64, 64)
    assert len(judges.predict(big)) == 2
    assert to_judge_tensor(images[0]).shape == (1, 3, 64, 64)
    assert judges.predict([]) == []


def test_metrics_in_unit_interval(tiny):
    judges = load_judges(tiny[0])
    images, styles, attrs = _renders(4)
    cf = content_fidelity(judges, images, attrs[0])
    assert 0.0 <= cf <= 1.0
    per = attribute_agreement(judges, images, attrs)
    assert set(per) == set(ATTRIBUTES) and all(0.0 <= v <= 1.0 for v in per.values())
    assert content_fidelity(judges, images, attrs) == pytest.approx(np.mean(list(per.values())))
    sub = attribute_agreement(judges, images, attrs, attributes=["eyes", "mouth"])
    assert set(sub) == {"eyes", "mouth"}
    sf = style_fidelity(judges, images, "mosaic")
    assert 0.0 <= sf <= 1.0
    with pytest.raises(ValueError, match="valid styles"):
        style_fidelity(judges, images, "oil")
    with pytest.raises(ValueError):
        attribute_agreement(judges, images, attrs[:2])  # one dict per image, or one for all


def test_save_load_round_trip_and_determinism(tiny, tmp_path):
    out, metrics = tiny
    images, _, _ = _renders(5)
    a = load_judges(out).probabilities(images)
    b = load_judges(out).probabilities(images)
    for k in a:
        assert torch.equal(a[k], b[k])
    again = train_judges(tmp_path, seed=0, **TINY)
    c = load_judges(tmp_path).probabilities(images)
    for k in a:
        assert torch.equal(a[k], c[k]), k
    assert again["attribute_accuracy"] == metrics["attribute_accuracy"]


def test_missing_judges_say_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="styo world train-judges"):
        load_judges(tmp_path / "nowhere")


def test_judge_files_contract(tiny, tmp_path):
    img, _, _ = render_seed(FRESH_SEED_BASE)
    path = tmp_path / "face.png"
    img.save(path)
    results = judge_files([path], judges_dir=tiny[0])
    assert len(results) == 1
    r = results[0]
    assert set(r) == {"path", "style", "attributes"}
    assert r["path"] == str(path)
    assert set(r["style"]) == set(STYLES)
    assert all(r["attributes"][k] in v for k, v in ATTRIBUTES.items())
    json.dumps(results)  # the CLI prints exactly this


def test_judge_files_bad_inputs(tiny, tmp_path):
    with pytest.raises(ImageInputError):
        judge_files([tmp_path / "missing.png"], judges_dir=tiny[0])
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    with pytest.raises(ImageInputError):
        judge_files([text], judges_dir=tiny[0])


# ------------------------------------------------------------------ the shipped judges

shipped = pytest.mark.skipif(
    not (DEFAULT_JUDGES / "judges.safetensors").is_file(),
    reason="models/judges not trained (styo world train-judges --out models/judges)",
)


@pytest.fixture(scope="module")
def fresh():
    return _renders(350, start=FRESH_SEED_BASE + 1_000)


@shipped
def test_shipped_judges_accuracy(fresh):
    judges = load_judges()
    images, styles, attrs = fresh
    preds = judges.predict(images)
    judged = [max(p["style"], key=p["style"].get) for p in preds]
    style_acc = np.mean([j == s for j, s in zip(judged, styles, strict=True)])
    assert style_acc >= 0.95
    for name in ATTRIBUTES:
        acc = np.mean([p["attributes"][name] == a[name] for p, a in zip(preds, attrs, strict=True)])
        assert acc >= 0.85, (name, acc)


@shipped
def test_shipped_content_fidelity_separates_sources():
    judges = load_judges()
    seed = FRESH_SEED_BASE + 5_000
    _, _, attrs = render_seed(seed)
    other = {k: next(v for v in values if v != attrs[k]) for k, values in ATTRIBUTES.items()}
    images = [render(attrs, style, seed) for style in STYLES]  # same face in every style
    assert content_fidelity(judges, images, attrs) >= 0.85
    assert content_fidelity(judges, images, other) <= 0.15
    for style, image in zip(STYLES, images, strict=True):
        assert style_fidelity(judges, [image], style) >= 0.5
