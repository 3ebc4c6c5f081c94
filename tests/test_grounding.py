"""Region maps of the renderer, grounded words of captions, and the grounding loss of pretraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from styo.world import grounding
from styo.world import pretrain as pt
from styo.world.attributes import STYLES
from styo.world.evaluate import heat_iou
from styo.world.render import (
    HEAD_REGIONS,
    REGIONS,
    region_masks,
    render_batch,
    render_regions,
    render_seed_regions,
)

BASE = {"face_shape": "oval", "skin_tone": "tan", "hair_colour": "red", "hair_cut": "short",
        "eyes": "round", "mouth": "smiling", "glasses": "none", "head_tilt": "upright",
        "background": "blue"}


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("style", STYLES)
def test_region_maps_put_each_region_where_the_portrait_has_it(style):
    image, regions = render_regions(dict(BASE, glasses="glasses"), style, seed=5)
    masks = region_masks(regions)
    assert regions.shape == image.size[::-1] and regions.max() < len(REGIONS)
    area = {k: int(m.sum()) for k, m in masks.items()}
    assert all(area[r] > 0 for r in REGIONS), area
    face, eyes, mouth, hair = (_centroid(masks[r]) for r in ("face", "eyes", "mouth", "hair"))
    assert eyes[1] < mouth[1] and hair[1] < eyes[1]  # hair above the eyes above the mouth
    assert abs(eyes[0] - face[0]) < 3 and abs(mouth[0] - face[0]) < 3
    assert _centroid(masks["body"])[1] > mouth[1] and masks["background"][0, 0]
    assert masks["head"].sum() == sum(area[r] for r in HEAD_REGIONS)
    # The painted colours agree with the map: the hair region is redder than the face region.
    rgb = np.asarray(image, np.float32)
    red = rgb[..., 0] - rgb[..., 1]
    assert red[masks["hair"]].mean() > red[masks["face"]].mean()


def test_regions_partition_the_image_and_follow_the_attributes():
    _, without = render_regions(BASE, "photo", seed=3)
    _, with_glasses = render_regions(dict(BASE, glasses="glasses"), "photo", seed=3)
    assert not (without == REGIONS.index("glasses")).any()
    assert (with_glasses == REGIONS.index("glasses")).sum() > 20
    _, long_hair = render_regions(dict(BASE, hair_cut="long"), "photo", seed=3)
    hair = REGIONS.index("hair")
    assert (long_hair == hair).sum() > 1.3 * (without == hair).sum()


def test_varied_layout_moves_the_head_and_centred_barely_does():
    spreads = {}
    for layout in ("centred", "varied"):  # same attributes, so only the seed moves the head
        regions = [render_regions(BASE, "photo", seed, layout=layout)[1] for seed in range(40)]
        centres = np.array([_centroid(region_masks(r)["head"]) for r in regions])
        spreads[layout] = centres.std(0)
    assert (spreads["centred"] < 1.2).all() and (spreads["varied"] > 1.5).all(), spreads
    assert (spreads["varied"] > 2 * spreads["centred"]).all(), spreads
    # the same seed keeps its attributes and style under either layout
    a = render_seed_regions(11, layout="centred")[2:]
    b = render_seed_regions(11, layout="varied")[2:]
    assert a == b


def test_unknown_layout_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="valid layouts: centred, varied"):
        render_regions(BASE, "photo", layout="tilted")
    with pytest.raises(ValueError, match="valid layouts"):
        pt.PretrainConfig(layout="tilted")


def test_grounded_words_name_the_visible_regions_only():
    caption = ("a drawing with photo not cartoon style of red hair not blonde hair glasses "
               "round eyes left tilt portrait")
    words = caption.split()
    got = [(words[i], target) for i, target in grounding.grounded_words(caption)]
    assert got == [("red", "hair"), ("hair", "hair"), ("glasses", "glasses"), ("round", "eyes"),
                   ("eyes", "eyes"), ("left", "head"), ("tilt", "head"), ("portrait", "head")]
    assert grounding.grounded_words("a drawing of no glasses portrait") == [(5, "head")]
    assert grounding.grounded_words("") == []
    # StyO's identifiers are no attribute: only portrait is grounded in its prompts
    prompt = "a drawing with ak47 not aug style of sks not m4a1 portrait"
    assert grounding.grounded_words(prompt) == [(11, "head")]
    # the targets words can name are the ones the word-map measurements report, the body never
    named = {t for c in (caption, "a drawing of round face pale skin blue background portrait",
                         "a drawing of smiling mouth portrait") for _, t in grounding.grounded_words(c)}
    assert named == set(grounding.WORD_TARGETS) and set(grounding.WORD_TARGETS) <= set(grounding.TARGETS)


def test_target_coverage_is_the_share_of_each_cell():
    regions = torch.zeros(1, 64, 64, dtype=torch.uint8)
    regions[0, :32, :] = REGIONS.index("hair")
    regions[0, 32:34, :] = REGIONS.index("eyes")
    cover = grounding.target_coverage(regions, 16)
    assert cover.shape == (1, len(grounding.TARGETS), 16, 16)
    torch.testing.assert_close(cover[:, :len(REGIONS)].sum(1), torch.ones(1, 16, 16))
    head = [REGIONS.index(r) for r in HEAD_REGIONS]
    torch.testing.assert_close(cover[:, grounding.TARGETS.index("head")], cover[:, head].sum(1))
    assert cover[0, REGIONS.index("hair"), 0, 0] == 1 and cover[0, REGIONS.index("eyes"), 8, 0] == 0.5
    assert cover[0, grounding.TARGETS.index("head"), 8, 0] == 0.5  # eyes belong to the head


def _tiny_batch(n: int = 4):
    from styo.world.architecture import build_text_encoder, build_tokenizer, build_unet

    tok = build_tokenizer()
    torch.manual_seed(0)
    unet, te = build_unet(), build_text_encoder(tok)
    images, styles, attrs, regions = render_batch(range(n), layout="varied", regions=True)
    from styo.world.captions import plain_caption

    captions = [plain_caption(s, a) for s, a in zip(styles, attrs, strict=True)]
    ids = tok(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    return unet, te, tok, captions, ids, torch.from_numpy(regions)


def test_the_grounding_processor_computes_the_same_layer_output():
    unet, te, _, _, ids, _ = _tiny_batch(2)
    z, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        context = te(ids)[0]
        before = unet(z, t, encoder_hidden_states=context).sample
        previous = dict(unet.attn_processors)
        store = grounding.install(unet)
        after = unet(z, t, encoder_hidden_states=context).sample
    unet.set_attn_processor(previous)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    sides = sorted({int(m.shape[1] ** 0.5) for m in store.maps})
    assert sides == [4, 8, 16] and all(torch.allclose(m.sum(-1), torch.ones(())) for m in store.maps)


def test_the_grounding_loss_moves_word_maps_into_their_regions():
    unet, te, tok, captions, ids, regions = _tiny_batch(4)
    g = grounding.batch_groundings(captions, ids, tok.eos_token_id)
    assert len(g["g_rows"]) > 4 * 10 and g["captioned"].all()
    store = grounding.install(unet)
    params = [*unet.parameters(), *te.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    z, t = torch.randn(4, 4, 16, 16), torch.full((4,), 300)
    cover = grounding.target_coverage(regions, 16)
    losses, pads = [], []
    for _ in range(12):
        unet(z, t, encoder_hidden_states=te(ids)[0])
        loss = grounding.grounding_loss(grounding.word_maps(store, 16), g["g_rows"],
                                        g["g_tokens"], g["g_targets"], cover)
        pad = grounding.padding_mass(store, g["eos"], g["captioned"])
        store.clear()
        opt.zero_grad()
        (loss + pad).backward()
        opt.step()
        losses.append(loss.item())
        pads.append(pad.item())
    assert losses[-1] < 0.8 * losses[0] and pads[-1] < pads[0], (losses, pads)


def test_padding_is_not_counted_for_the_empty_prompt():
    store = grounding.MapStore()
    maps = torch.zeros(2, 4, 77)
    maps[:, :, 10] = 1.0  # every pixel on position 10: padding for a row whose EOS is at 1
    store.maps.append(maps)
    eos = torch.tensor([1, 1])
    assert grounding.padding_mass(store, eos, torch.tensor([True, False])).item() == 1.0
    assert grounding.padding_mass(store, eos, torch.tensor([False, False])).item() == 0.0


def test_the_padding_allowance_only_counts_each_caption_s_mass_beyond_it():
    store = grounding.MapStore()
    maps = torch.zeros(2, 4, 77)
    maps[0, :, 10] = 1.0  # row 0: all of it on padding
    maps[1, :, 10] = 0.1  # row 1: a tenth on padding, the rest on its words
    maps[1, :, 1] = 0.9
    store.maps.append(maps)
    eos, captioned = torch.tensor([3, 3]), torch.tensor([True, True])
    assert grounding.padding_mass(store, eos, captioned).item() == pytest.approx(0.55)
    assert grounding.padding_mass(store, eos, captioned, allowance=0.2).item() == pytest.approx(0.4)
    assert grounding.padding_mass(store, eos, captioned, allowance=1.0).item() == 0.0


def test_a_new_draw_seed_changes_the_batches_but_not_the_dataset():
    cfg = pt.PretrainConfig(n_images=48, unet_steps=3, unet_batch=4)
    data = {"styles": np.zeros(48, np.int64), "attributes": np.zeros((48, 9), np.int64)}
    tok = pt.arch.build_tokenizer()

    def first_batch(c):
        return pt._UNetBatches(data, 48, (4, 16, 16), tok, c, 1000)[0]

    same = first_batch(pt.PretrainConfig(**{**cfg.__dict__, "draw_seed": 0}))
    torch.testing.assert_close(first_batch(cfg)["noise"], same["noise"], rtol=0, atol=0)
    other = first_batch(pt.PretrainConfig(**{**cfg.__dict__, "draw_seed": 1}))
    assert not torch.equal(other["noise"], same["noise"])


def _tiny_unet_run(tmp_path, unet_steps: int) -> tuple[dict, dict, dict]:
    """A few UNet steps' worth of the varied-layout dataset, random latents, and the config fields."""
    tiny = dict(n_images=48, unet_steps=unet_steps, unet_batch=4, checkpoint_every=100, warmup=1)
    data = pt.build_dataset(tmp_path, pt.PretrainConfig(layout="varied", **tiny))
    g = torch.Generator().manual_seed(0)
    latents = {"mean": torch.randn(48, 4, 16, 16, generator=g),
               "std": torch.full((48, 4, 16, 16), 0.1), "scaling_factor": torch.tensor(1.0)}
    return tiny, data, latents


@pytest.mark.slow
def test_grounded_pretraining_changes_the_weights_and_puts_the_processors_back(tmp_path):
    tiny, data, latents = _tiny_unet_run(tmp_path, unet_steps=3)
    plain_cfg = pt.PretrainConfig(layout="varied", **tiny)
    plain = pt.train_unet(data, latents, tmp_path / "plain", plain_cfg, "cpu")[0]
    grounded_cfg = pt.PretrainConfig(layout="varied", grounding_weight=0.1, padding_weight=0.1, **tiny)
    grounded = pt.train_unet(data, latents, tmp_path / "grounded", grounded_cfg, "cpu")[0]
    assert type(next(iter(grounded.attn_processors.values()))) is type(
        next(iter(plain.attn_processors.values())))
    changed = [not torch.equal(a, b) for a, b in
               zip(plain.state_dict().values(), grounded.state_dict().values(), strict=True)]
    assert any(changed)
    again = pt.train_unet(data, latents, tmp_path / "plain-again", plain_cfg, "cpu")[0]
    for (name, a), b in zip(plain.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_detail_weights_lift_the_eye_and_mouth_cells_and_keep_the_loss_scale():
    _, regions, _, _ = render_seed_regions(3, style="photo", overrides=BASE, layout="varied")
    maps = torch.from_numpy(np.stack([regions, regions]))
    w = pt.detail_weights(maps, 16, weight=20.0)
    assert w.shape == (2, 1, 16, 16)
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    cover = grounding.target_coverage(maps, 16)
    detail = cover[:, [REGIONS.index("eyes"), REGIONS.index("mouth")]].sum(1, keepdim=True)
    assert w[detail > 0.2].min() > 2 * w[detail == 0].max()
    flat = pt.detail_weights(maps, 16, weight=0.0)
    pred, noise = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(pt.denoising_loss(pred, noise, flat), torch.nn.functional.mse_loss(pred, noise))
    # the error on the eyes and mouth now counts more than the same error on the background
    on_detail = torch.zeros_like(pred).masked_fill(detail.expand_as(pred) > 0.2, 1.0)
    on_plain = torch.zeros_like(pred)
    on_plain[..., :2, :] = 1.0  # top rows: background in every layout
    scale = on_detail.sum() / on_plain.sum()
    assert pt.denoising_loss(on_detail, 0 * pred, w) > pt.denoising_loss(on_plain * scale, 0 * pred, w)


@pytest.mark.slow
def test_detail_weighted_pretraining_changes_the_weights(tmp_path):
    tiny, data, latents = _tiny_unet_run(tmp_path, unet_steps=2)
    plain = pt.train_unet(data, latents, tmp_path / "plain",
                          pt.PretrainConfig(layout="varied", **tiny), "cpu")[0]
    weighted = pt.train_unet(data, latents, tmp_path / "detail",
                             pt.PretrainConfig(layout="varied", detail_weight=20.0, **tiny), "cpu")[0]
    assert any(not torch.equal(a, b) for a, b in
               zip(plain.state_dict().values(), weighted.state_dict().values(), strict=True))


def _block_map(side: int = 16, fill: str = "flat") -> tuple[torch.Tensor, torch.Tensor]:
    """One word's map on a ``side``² grid: all its mass on a 6×6 block, flat or peaked (a cone),
    and the block's coverage as a target."""
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    inside = ((ys - 7.5).abs() < 3) & ((xs - 7.5).abs() < 3)
    if fill == "flat":
        word = inside.float()
    else:
        word = (3.0 - torch.maximum((ys - 7.5).abs(), (xs - 7.5).abs())).clamp_min(0) * inside
    maps = torch.full((1, side * side, 3), 1e-3)
    maps[0, :, 1] = word.flatten() / word.sum()
    coverage = torch.zeros(1, len(grounding.TARGETS), side, side)
    coverage[0, 0] = inside.float()
    return maps, coverage


def test_the_threshold_loss_prefers_a_map_that_covers_its_region_to_one_that_peaks_in_it():
    args = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]))
    flat, coverage = _block_map(fill="flat")
    peaked, _ = _block_map(fill="cone")
    # Both keep all their mass inside the region, so the token part of TokenCompose's loss
    # cannot tell them apart; the map DAAM thresholds at 0.4 covers the region only for the flat one.
    region = coverage[0, 0].flatten() > 0
    hard_iou = {}
    for name, m in (("flat", flat), ("peaked", peaked)):
        word = m[0, :, 1]
        assert float((word * region).sum() / word.sum()) == pytest.approx(1.0, abs=0.02)
        normalised = (word - word.min()) / (word.max() - word.min())
        hard_iou[name] = heat_iou(normalised.numpy(), region.numpy())  # the measurement's own IoU
    assert hard_iou["flat"] == 1.0 and hard_iou["peaked"] < 0.5
    on_flat = grounding.threshold_loss(flat, *args, coverage)
    on_peak = grounding.threshold_loss(peaked, *args, coverage)
    assert on_flat < 0.15 and on_peak > on_flat + 0.2, (on_flat, on_peak)
    # a map on the wrong place is worst
    wrong = flat.clone()
    wrong[0, :, 1] = flat[0, :, 1].reshape(16, 16).roll(8, dims=1).flatten()
    assert grounding.threshold_loss(wrong, *args, coverage) > 0.9
    # and the loss gives the peaked map a gradient towards covering the region
    peaked.requires_grad_(True)
    grounding.threshold_loss(peaked, *args, coverage).backward()
    grad = peaked.grad[0, :, 1].reshape(16, 16)
    assert grad[5, 5] < 0 and grad[0, 0] >= 0  # raise the block's corner, not the far background


@pytest.mark.slow
def test_threshold_weighted_pretraining_changes_the_weights_and_zero_leaves_them(tmp_path):
    tiny, data, latents = _tiny_unet_run(tmp_path, unet_steps=2)
    base = dict(layout="varied", grounding_weight=0.1, **tiny)
    grounded = pt.train_unet(data, latents, tmp_path / "g", pt.PretrainConfig(**base), "cpu")[0]
    zero = pt.train_unet(data, latents, tmp_path / "z",
                         pt.PretrainConfig(threshold_weight=0.0, **base), "cpu")[0]
    shaped = pt.train_unet(data, latents, tmp_path / "s",
                           pt.PretrainConfig(threshold_weight=1.0, **base), "cpu")[0]
    for (name, a), b in zip(grounded.state_dict().items(), zero.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(a, b) for a, b in
               zip(grounded.state_dict().values(), shaped.state_dict().values(), strict=True))


def test_the_threshold_loss_at_picture_resolution_traces_a_small_region_finer_than_its_cells():
    """Scored at the picture's resolution (the map upsampled bicubically, as DAAM scores it), the
    loss leads a 16² map to trace a region a few pixels wide better than the cells' own coverage,
    the best a map scored on the cells can aim for."""
    import torch.nn.functional as F

    side, size = 16, 64
    region = torch.zeros(size, size)
    region[29:32, 18:25] = 1.0  # an eye: 3 x 7 pixels, not aligned with the 4-pixel cells
    fine = torch.zeros(1, len(grounding.TARGETS), size, size)
    fine[0, 1] = region
    cells = F.adaptive_avg_pool2d(region[None, None], side)[0, 0]
    rows, tokens, targets = torch.tensor([0]), torch.tensor([0]), torch.tensor([1])

    def hard_iou(cell_map):
        heat = F.interpolate(cell_map.view(1, 1, side, side), size=(size, size), mode="bicubic",
                             align_corners=False)[0, 0]
        return heat_iou(((heat - heat.min()) / (heat.max() - heat.min())).numpy(), region.numpy() > 0)

    def trained(coverage):
        logits = torch.logit(cells.clamp(0.02, 0.98)).flatten().requires_grad_(True)
        optimiser = torch.optim.Adam([logits], lr=0.1)
        losses = []
        for _ in range(200):
            loss = grounding.threshold_loss(torch.sigmoid(logits)[None, :, None], rows, tokens, targets,
                                            coverage, temperature=0.05)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        return torch.sigmoid(logits).detach(), losses

    traced, losses = trained(fine)
    assert losses[-1] < losses[0] - 0.1
    assert hard_iou(traced) > hard_iou(cells) + 0.1
    # scored on the cells instead, the same descent cannot do better than the cells' coverage
    on_cells, _ = trained(cells[None, None].expand(1, len(grounding.TARGETS), side, side))
    assert hard_iou(on_cells) <= hard_iou(cells) + 1e-9 < hard_iou(traced)


@pytest.mark.slow
def test_the_threshold_loss_at_picture_resolution_changes_pretraining(tmp_path):
    tiny, data, latents = _tiny_unet_run(tmp_path, unet_steps=2)
    base = dict(layout="varied", grounding_weight=0.1, threshold_weight=1.0, **tiny)
    cells = pt.train_unet(data, latents, tmp_path / "c", pt.PretrainConfig(**base), "cpu")[0]
    picture = pt.train_unet(data, latents, tmp_path / "p",
                            pt.PretrainConfig(threshold_at_picture=True, **base), "cpu")[0]
    assert any(not torch.equal(a, b) for a, b in
               zip(cells.state_dict().values(), picture.state_dict().values(), strict=True))


def test_region_weights_scale_each_words_threshold_term_and_ones_change_nothing():
    flat, coverage = _block_map(fill="flat")
    peaked, _ = _block_map(fill="cone")
    maps = torch.cat([flat, peaked])  # row 0 covers its region, row 1 peaks in it
    coverage = torch.cat([coverage, coverage])
    coverage[1, grounding.TARGETS.index("eyes")] = coverage[1, 0]
    rows, tokens = torch.tensor([0, 1]), torch.tensor([1, 1])
    targets = torch.tensor([0, grounding.TARGETS.index("eyes")])
    plain = grounding.threshold_loss(maps, rows, tokens, targets, coverage)
    assert grounding.target_weights({}) is None
    ones = grounding.target_weights({"eyes": 1.0})
    assert torch.equal(grounding.threshold_loss(maps, rows, tokens, targets, coverage, weights=ones[targets]),
                       plain)
    each = [float(grounding.threshold_loss(maps, rows[[k]], tokens[[k]], targets[[k]], coverage)) for k in (0, 1)]
    heavy = grounding.target_weights({"eyes": 4.0})
    assert heavy.tolist() == [4.0 if t == "eyes" else 1.0 for t in grounding.TARGETS]
    weighted = grounding.threshold_loss(maps, rows, tokens, targets, coverage, weights=heavy[targets])
    assert float(weighted) == pytest.approx((each[0] + 4 * each[1]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="threshold_region_weights takes hair, eyes"):
        pt.PretrainConfig(threshold_region_weights={"nose": 2.0})


def test_word_weights_pick_one_shape_of_a_region_and_its_noun():
    caption = "a drawing with photo style of round face closed eyes smiling mouth glasses portrait"
    words = caption.split()
    weights = {"closed": 8.0, "glasses": 2.0}
    got = {words[p]: grounding.word_weight(caption, p, weights) for p, _ in grounding.grounded_words(caption)}
    assert got == {"round": 1.0, "face": 1.0, "closed": 8.0, "eyes": 8.0, "smiling": 1.0, "mouth": 1.0,
                   "glasses": 2.0, "portrait": 1.0}
    unet, te, tok, captions, ids, regions = _tiny_batch(3)
    plain = grounding.batch_groundings(captions, ids, tok.eos_token_id)
    weighted = grounding.batch_groundings(captions, ids, tok.eos_token_id, {"closed": 8.0})
    assert "g_weights" not in plain and weighted["g_weights"].shape == weighted["g_rows"].shape
    for k in ("g_rows", "g_tokens", "g_targets"):
        assert torch.equal(plain[k], weighted[k])
    expected = [grounding.word_weight(captions[r], int(t) - 1, {"closed": 8.0})
                for r, t in zip(weighted["g_rows"], weighted["g_tokens"], strict=True)]
    assert weighted["g_weights"].tolist() == expected
    assert {"closed", "eyes", "portrait", "glasses", "haircut"} <= grounding.grounded_vocabulary()
    with pytest.raises(ValueError, match="threshold_word_weights takes words a caption grounds"):
        pt.PretrainConfig(threshold_word_weights={"photo": 2.0})  # a style word is never grounded


@pytest.mark.slow
@pytest.mark.parametrize("field, ones, heavy", [
    ("threshold_region_weights", {"eyes": 1.0}, {"hair": 4.0}),
    ("threshold_word_weights", {"closed": 1.0}, {"portrait": 4.0})])
def test_weighted_threshold_pretraining_changes_the_weights_and_ones_do_not(tmp_path, field, ones, heavy):
    tiny, data, latents = _tiny_unet_run(tmp_path, unet_steps=2)
    base = dict(layout="varied", grounding_weight=0.1, threshold_weight=1.0, **tiny)
    plain = pt.train_unet(data, latents, tmp_path / "p", pt.PretrainConfig(**base), "cpu")[0]
    unit = pt.train_unet(data, latents, tmp_path / "o", pt.PretrainConfig(**{field: ones}, **base), "cpu")[0]
    weighted = pt.train_unet(data, latents, tmp_path / "h", pt.PretrainConfig(**{field: heavy}, **base), "cpu")[0]
    for (name, a), b in zip(plain.state_dict().items(), unit.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(a, b) for a, b in
               zip(plain.state_dict().values(), weighted.state_dict().values(), strict=True))
