"""Base-model evaluation: held-out combinations really are unseen, and the scoring is wired."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from styo.world.architecture import build_vae
from styo.world.attributes import HELD_OUT_STYLES, PRETRAIN_STYLES, STYLES
from styo.world.evaluate import codec_report, heldout_combinations, training_combinations
from styo.world.judges import load_judges
from styo.world.render import render_seed


def test_training_combinations_match_the_rendered_dataset():
    combos = training_combinations(50)
    for seed in range(50):
        _, style, attrs = render_seed(seed, styles=PRETRAIN_STYLES)
        assert (style, *attrs.values()) in combos


def test_heldout_combinations_are_unseen_and_style_balanced():
    seen = training_combinations(2000)
    combos = heldout_combinations(70, seen, seed=5)
    assert len(combos) == 70
    assert all((s, *a.values()) not in seen for s, a in combos)
    counts = {s: sum(c[0] == s for c in combos) for s in PRETRAIN_STYLES}
    assert set(counts.values()) == {70 // len(PRETRAIN_STYLES)}
    assert heldout_combinations(70, seen, seed=5) == combos


class _IdentityCodec(torch.nn.Module):
    """A lossless 'VAE' (latents are the image): the report's upper bound."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=x))

    def decode(self, z):
        return SimpleNamespace(sample=z)


def test_codec_report_reads_a_lossless_codec_as_perfect_and_a_random_one_as_lossy():
    judges = load_judges()
    perfect = codec_report(_IdentityCodec(), judges, per_style=6)
    assert set(perfect["per_style"]) == set(STYLES) and set(perfect["held_out"]) == set(HELD_OUT_STYLES)
    for style, row in perfect["per_style"].items():
        assert row["mse"] == 0.0, style
        assert row["judged_style_accuracy"] >= 5 / 6, style
    # a lossless codec keeps every attribute the judge reads in the renders
    assert perfect["attributes_reconstructed"] == perfect["attributes_rendered"]
    assert min(perfect["attributes_rendered"].values()) >= 0.8
    torch.manual_seed(0)
    random = codec_report(build_vae().eval(), judges, per_style=2)
    assert all(row["mse"] > 0.01 for row in random["per_style"].values())
    assert random["attributes_reconstructed"]["eyes"] < random["attributes_rendered"]["eyes"]


def test_reconstruct_returns_what_the_codec_draws():
    from styo.world.evaluate import reconstruct

    image = render_seed(4, style="pixel")[0]
    (same,) = reconstruct(_IdentityCodec(), [image])
    assert same.size == image.size and same.mode == "RGB"
    assert abs(np.asarray(same, dtype=int) - np.asarray(image, dtype=int)).max() <= 1  # [-1, 1] round trip


def test_the_shipped_vae_reproduces_its_model_card_figures():
    """models/styo-mini-vae/metrics.json is measured, not written: re-measure it on the same renders."""
    folder = Path(__file__).parents[1] / "models" / "styo-mini-vae"
    recorded = json.loads((folder / "metrics.json").read_text())
    report = codec_report(AutoencoderKL.from_pretrained(folder).eval(), load_judges(),
                          per_style=recorded["n_per_style"])
    for style, row in recorded["per_style"].items():
        measured = report["per_style"][style]
        assert abs(measured["mse"] - row["mse"]) < 0.02 * row["mse"], style
        # one of n images may flip at a decision boundary on another CPU's arithmetic
        assert abs(measured["judged_style_accuracy"] - row["judged_style_accuracy"]) <= 1 / recorded["n_per_style"], style
    for style in HELD_OUT_STYLES:  # what one-shot stylization needs: unseen styles survive the codec
        assert report["per_style"][style]["judged_style_accuracy"] >= 0.95


class _RenderingPipe:
    """A 'text-to-image model' that draws exactly what each caption asks for, in ``style`` if given."""

    def __init__(self, combos, style=None):
        from styo.world.captions import plain_caption

        self.by_prompt = {plain_caption(s, a): (s, a) for s, a in combos}
        self.style = style

    def __call__(self, prompts, num_inference_steps, guidance_scale, generator):
        from styo.world.render import render

        images = []
        for prompt, gen in zip(prompts, generator, strict=True):
            style, attrs = self.by_prompt[prompt]
            images.append(render(attrs, self.style or style, int(gen.initial_seed())))
        return SimpleNamespace(images=images)


def test_evaluation_keeps_per_image_records_that_add_up_to_its_figures():
    from styo.world.evaluate import evaluate_base_model

    judges = load_judges()
    combos = heldout_combinations(10, training_combinations(200), seed=3)
    faithful = evaluate_base_model(_RenderingPipe(combos), judges, combos, batch_size=4)
    assert faithful["style_accuracy"] == 1.0 and faithful["mean_attribute_accuracy"] >= 0.95
    assert [r["prompt"] for r in faithful["per_image"]] == faithful["prompts"]
    assert set(faithful["per_style"]) == set(PRETRAIN_STYLES)
    assert sum(row["n"] for row in faithful["per_style"].values()) == 10

    one_style = evaluate_base_model(_RenderingPipe(combos, style="photo"), judges, combos, batch_size=4)
    records = one_style["per_image"]
    assert one_style["style_accuracy"] == np.mean([r["style"] == "photo" for r in records]) == 0.2
    assert all(r["judged_style"] == "photo" for r in records)
    assert one_style["per_style"]["photo"]["style_accuracy"] == 1.0
    assert one_style["per_style"]["cartoon"]["style_accuracy"] == 0.0
    for name, value in one_style["attribute_accuracy"].items():
        assert value == np.mean([r["attributes_correct"][name] for r in records])


BASE_MODEL = Path(__file__).parents[1] / "models" / "styo-mini"


@pytest.mark.skipif(not (BASE_MODEL / "model_index.json").is_file(),
                    reason="models/styo-mini is not trained yet")
def test_the_shipped_base_model_meets_and_reproduces_its_model_card_figures():
    """metrics.json is measured: its aggregates are the mean of its per-image records, they meet
    the model card's targets, and the first images, generated again, are judged the same way."""
    from styo.pipeline import load_pipeline
    from styo.world.evaluate import evaluate_base_model

    files = [p for p in BASE_MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    recorded = json.loads((BASE_MODEL / "metrics.json").read_text())
    records = recorded["per_image"]
    assert len(records) == recorded["n"] >= 100
    assert recorded["style_accuracy"] == pytest.approx(np.mean([r["style_correct"] for r in records]))
    # the targets the grounded versions were held to (the first version's were 0.90 and 0.70)
    assert recorded["style_accuracy"] >= 0.95 and recorded["mean_attribute_accuracy"] >= 0.85
    eyes = [r["attributes_correct"]["eyes"] for r in records]
    assert recorded["attribute_accuracy"]["eyes"] == pytest.approx(np.mean(eyes)) and np.mean(eyes) >= 0.60

    k = 12  # image i depends only on its prompt and seed + i, so a prefix re-measures exactly
    combos = heldout_combinations(recorded["n"], training_combinations(recorded.get("n_train", 40_000)),
                                  seed=recorded["seed"])[:k]
    again = evaluate_base_model(load_pipeline(BASE_MODEL), load_judges(), combos, steps=recorded["steps"],
                                guidance=recorded["guidance"], seed=recorded["seed"])
    assert again["prompts"] == [r["prompt"] for r in records[:k]]
    differ = sum((a["judged_style"] != b["judged_style"])
                 + sum(a["attributes_correct"][n] != b["attributes_correct"][n] for n in a["attributes_correct"])
                 for a, b in zip(again["per_image"], records[:k], strict=True))
    assert differ <= 2, f"{differ} of {k * 10} judgements changed"


@pytest.mark.skipif(not (BASE_MODEL / "grounding.json").is_file(),
                    reason="the shipped base model has no grounding measurement")
def test_the_shipped_base_model_reproduces_its_word_map_figures():
    """grounding.json (``styo world grounding``) is measured: each region's figure is the mean of
    its per-word records, its words look where their things are (the card's mean), and the first
    pictures, generated and scored again, give the same IoUs."""
    from styo.pipeline import load_pipeline
    from styo.world.evaluate import evaluate_grounding
    from styo.world.segmenter import load_segmenter

    recorded = json.loads((BASE_MODEL / "grounding.json").read_text())
    records = recorded["per_image"]
    assert len(records) == recorded["n"] >= 100 and recorded["protocol"] == "daam"
    for target, figure in recorded["miou_per_target"].items():
        ious = [w["iou"] for r in records for w in r["words"].values() if w["target"] == target]
        assert figure == pytest.approx(np.mean(ious)), target
    assert recorded["miou"] == pytest.approx(np.mean(list(recorded["miou_per_target"].values())))
    assert recorded["miou"] >= 0.60 and recorded["sharpness"]["padding_mass"] <= 0.30
    # every region word lands on its region at 0.40 or better, except the eyes: a few pixels of a
    # 64-pixel portrait, which the shipped model's maps do not trace (grounding-ceiling.md says
    # how well a map on 16x16 latents could)
    assert min(v for t, v in recorded["miou_per_target"].items() if t != "eyes") >= 0.40

    k = 6  # picture i depends only on its prompt and seed + i, so a prefix re-measures exactly
    combos = heldout_combinations(recorded["n"], training_combinations(recorded.get("n_train", 40_000)),
                                  seed=recorded["seed"])[:k]
    again = evaluate_grounding(load_pipeline(BASE_MODEL), load_segmenter(), combos, steps=recorded["steps"],
                               guidance=recorded["guidance"], seed=recorded["seed"], progress=False)
    assert [r["prompt"] for r in again["per_image"]] == [r["prompt"] for r in records[:k]]
    pairs = [(w["iou"], records[i]["words"][key]["iou"]) for i, r in enumerate(again["per_image"])
             for key, w in r["words"].items() if key in records[i]["words"]]
    assert len(pairs) >= 10 * k
    assert np.mean([abs(a - b) for a, b in pairs]) < 0.02, pairs


def test_heat_iou_thresholds_the_normalised_map():
    from styo.world.evaluate import heat_iou

    heat = np.zeros((4, 4), np.float32)
    heat[:2] = 1.0
    heat[2] = 0.3  # below tau = 0.4
    mask = np.zeros((4, 4), bool)
    mask[:3] = True
    assert heat_iou(heat, mask) == pytest.approx(8 / 12)
    assert np.isnan(heat_iou(np.zeros((2, 2)), np.zeros((2, 2), bool)))


def test_a_perfect_map_is_exact_at_full_resolution_and_loses_small_regions_on_coarse_latents():
    from styo.world.evaluate import heat_iou, perfect_heat
    from styo.world.render import region_masks, render_seed_regions

    _, regions, _, _ = render_seed_regions(3, style="photo", overrides={"glasses": "none"})
    masks = region_masks(regions)
    for name in ("background", "hair", "eyes"):
        assert heat_iou(perfect_heat(masks[name], [64]), masks[name]) == 1.0
    ceiling = {name: heat_iou(perfect_heat(masks[name], [16, 16, 8]), masks[name])
               for name in ("background", "eyes")}
    assert ceiling["background"] > 0.9 > ceiling["eyes"]
    at_32 = heat_iou(perfect_heat(masks["eyes"], [32]), masks["eyes"])
    assert at_32 > heat_iou(perfect_heat(masks["eyes"], [16]), masks["eyes"])


@pytest.mark.skipif(not (BASE_MODEL / "model_index.json").is_file(), reason="no base model")
def test_grounding_scores_every_grounded_word_of_each_caption():
    from styo.pipeline import load_pipeline
    from styo.world.evaluate import evaluate_grounding
    from styo.world.grounding import grounded_words
    from styo.world.segmenter import load_segmenter

    combos = heldout_combinations(2, set(), seed=5)
    result = evaluate_grounding(load_pipeline(BASE_MODEL), load_segmenter(), combos, steps=4,
                                progress=False)
    for record in result["per_image"]:
        n_words = len(grounded_words(record["prompt"]))
        assert 0 < len(record["words"]) <= n_words
        assert all(0 <= w["iou"] <= 1 for w in record["words"].values())
        assert all(0 < w["ceiling"] <= 1 for w in record["words"].values())
    scored = sum(result["words_scored"].values()) + sum(result["words_absent"].values())
    assert scored == sum(len(grounded_words(r["prompt"])) for r in result["per_image"])
    assert result["min_target_miou"] <= result["miou"] <= max(result["miou_per_target"].values())


@pytest.mark.skipif(not (BASE_MODEL / "model_index.json").is_file(), reason="no base model")
def test_where_words_land_splits_each_words_heat_over_the_judged_regions():
    from styo.pipeline import load_pipeline
    from styo.world.evaluate import where_words_land
    from styo.world.segmenter import load_segmenter

    found = where_words_land(load_pipeline(BASE_MODEL), load_segmenter(),
                             "a drawing with photo style of sks not m4a1 portrait", ["sks", "portrait"],
                             steps=3)
    assert set(found["words"]) == {"sks", "portrait"}
    for per_region in found["words"].values():
        # the head is face, hair, eyes, mouth and glasses: inside the head and the background
        # and body it covers everything once
        parts = per_region["head"]["share"] + per_region["body"]["share"] + per_region["background"]["share"]
        assert parts == pytest.approx(1.0, abs=1e-4)
        assert per_region["face"]["share"] <= per_region["head"]["share"]
        assert 0 < per_region["head"]["region_share"] < 1


def test_daam_protocol_leaves_out_the_middle_block_and_min_max_normalises():
    """DAAM's heat map: the middle block's maps are not aggregated, each word's map spans [0, 1]
    after min-max normalisation, and a perfect map at full resolution scores 1."""
    from styo.attention import AttentionRecorder
    from styo.world.evaluate import daam_heats, daam_layers, heat_iou, perfect_daam_heat
    from styo.world.render import region_masks, render_seed_regions

    recorder = AttentionRecorder(max_resolution=None, branches=("sty",))
    fine = torch.full((1, 1, 16, 16, 3), 0.1)
    fine[0, 0, 2:6, 2:6, 1] = 0.9  # token 1 attends on the top left
    mid = torch.full((1, 1, 4, 4, 3), 0.1)
    mid[0, 0, 3, 3, 1] = 5.0  # the middle block's map points elsewhere, and loudly
    for step in (0, 1):
        recorder.store("down_blocks.0.attentions.0.transformer_blocks.0.attn2", step,
                       fine.flatten(2, 3), (16, 16))
        recorder.store("mid_block.attentions.0.transformer_blocks.0.attn2", step,
                       mid.flatten(2, 3), (4, 4))
    assert daam_layers(recorder) == ["down_blocks.0.attentions.0.transformer_blocks.0.attn2"]
    heat = daam_heats(recorder, {"w": [1]}, (64, 64))["w"]
    assert heat.min() == pytest.approx(0.0, abs=1e-6) and heat.max() == pytest.approx(1.0, abs=1e-6)
    top_left = np.zeros((64, 64), bool)
    top_left[8:24, 8:24] = True
    assert heat_iou(heat, top_left) > 0.8
    everything = recorder.aggregate({"w": [1]}, image_size=(64, 64))  # the figure's aggregation keeps the middle block
    assert heat_iou(everything["w"], top_left) < heat_iou(heat, top_left)

    _, regions, _, _ = render_seed_regions(3, style="photo", overrides={"glasses": "none"})
    masks = region_masks(regions)
    for name in ("background", "hair", "eyes"):
        assert heat_iou(perfect_daam_heat(masks[name], [64]), masks[name]) == 1.0
    assert (heat_iou(perfect_daam_heat(masks["eyes"], [32, 16]), masks["eyes"])
            > heat_iou(perfect_daam_heat(masks["eyes"], [16, 8]), masks["eyes"]))
