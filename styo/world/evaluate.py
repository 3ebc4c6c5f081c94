"""Measure the base model: does it draw what its captions ask for, on combinations it never saw?

Prompts are plain captions (every attribute, no ``not``) of (style, attributes) combinations that
do not occur in the pretraining data; the judges read the generated portraits. These are the
figures of the model card.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data import image_to_tensor
from .attributes import ATTRIBUTES, HELD_OUT_STYLES, PRETRAIN_STYLES, STYLES, sample_attributes
from .captions import plain_caption
from .grounding import GROUNDING_THRESHOLD, grounded_words
from .judges import FRESH_SEED_BASE, Judges, attribute_agreement
from .render import render_seed


def training_combinations(n_images: int, seed: int = 0) -> set[tuple[str, ...]]:
    """(style, *values) of every pretraining image, recomputed from its seed like ``render_seed``."""
    start = seed * 10_000_000
    combos = set()
    for s in range(start, start + n_images):
        rng = np.random.default_rng(s)
        attrs = sample_attributes(rng)
        style = PRETRAIN_STYLES[int(rng.integers(len(PRETRAIN_STYLES)))]
        combos.add((style, *attrs.values()))
    return combos


def heldout_combinations(
    n: int, seen: set[tuple[str, ...]], seed: int = 123
) -> list[tuple[str, dict[str, str]]]:
    """``n`` (style, attributes) pairs, styles balanced, none of them in ``seen``."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, dict[str, str]]] = []
    while len(out) < n:
        style = PRETRAIN_STYLES[len(out) % len(PRETRAIN_STYLES)]
        attrs = sample_attributes(rng)
        if (style, *attrs.values()) not in seen:
            out.append((style, attrs))
    return out


@torch.no_grad()
def generate(
    pipe: Any, prompts: list[str], seed: int, steps: int, guidance: float, batch_size: int
) -> list:
    """PIL images, image ``i`` from its own generator seeded ``seed + i`` (batch-independent)."""
    images = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generate"):
        chunk = prompts[i : i + batch_size]
        gens = [torch.Generator("cpu").manual_seed(seed + i + k) for k in range(len(chunk))]
        images += pipe(
            chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens
        ).images
    return images


def evaluate_base_model(
    pipe: Any,
    judges: Judges,
    combos: list[tuple[str, dict[str, str]]],
    *,
    steps: int = 25,
    guidance: float = 5.0,
    seed: int = 0,
    batch_size: int = 24,
) -> dict[str, Any]:
    """Generate one image per combination and score it with the judges."""
    prompts = [plain_caption(style, attrs) for style, attrs in combos]
    images = generate(pipe, prompts, seed, steps, guidance, batch_size)
    per_image = score_images(judges, images, combos)
    for record, prompt in zip(per_image, prompts, strict=True):
        record["prompt"] = prompt
    per_attr = {name: float(np.mean([r["attributes_correct"][name] for r in per_image])) for name in ATTRIBUTES}
    per_style = {}
    for style in dict.fromkeys(s for s, _ in combos):
        mine = [r for r in per_image if r["style"] == style]
        per_style[style] = {
            "n": len(mine),
            "style_accuracy": float(np.mean([r["style_correct"] for r in mine])),
            "mean_attribute_accuracy": float(np.mean([np.mean(list(r["attributes_correct"].values())) for r in mine])),
        }
    return {
        "n": len(combos),
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "style_accuracy": float(np.mean([r["style_correct"] for r in per_image])),
        "style_probability": float(np.mean([r["style_probability"] for r in per_image])),
        "attribute_accuracy": per_attr,
        "mean_attribute_accuracy": float(np.mean(list(per_attr.values()))),
        "per_style": per_style,
        "per_image": per_image,
        "images": images,
        "prompts": prompts,
    }


def score_images(judges: Judges, images: list, combos: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
    """What the judges read in each image against what its caption asked for (one dict per image).

    Kept per image so that a model card's aggregate can be re-checked on any subset: image ``i``
    depends only on its prompt and seed ``seed + i``, not on the others.
    """
    records = []
    for p, (style, attrs) in zip(judges.predict(images), combos, strict=True):
        judged = max(p["style"], key=p["style"].get)
        records.append({
            "style": style,
            "judged_style": judged,
            "style_correct": judged == style,
            "style_probability": float(p["style"][style]),
            "attributes_correct": {name: p["attributes"][name] == attrs[name] for name in ATTRIBUTES},
        })
    return records


@torch.no_grad()
def _roundtrip(vae: Any, x: torch.Tensor) -> torch.Tensor:
    """Encode to the posterior mean and decode: (N, 3, H, W) in [-1, 1] in and out, on CPU."""
    param = next(vae.parameters())
    return vae.decode(vae.encode(x.to(param)).latent_dist.mean).sample.float().cpu().clamp(-1, 1)


def _to_tensor(images: list) -> torch.Tensor:
    return torch.stack([image_to_tensor(im) for im in images])


def reconstruct(vae: Any, images: list) -> list:
    """What the autoencoder makes of each PIL image (encode, decode): the codec's view of it."""
    out = _roundtrip(vae, _to_tensor(images)).add(1).mul(127.5).round().byte()
    return [Image.fromarray(a) for a in out.permute(0, 2, 3, 1).numpy()]


@torch.no_grad()
def codec_report(vae: Any, judges: Judges, per_style: int = 40, seed: int = FRESH_SEED_BASE) -> dict[str, Any]:
    """How well the VAE represents each style, held-out ones included, on fresh renders.

    One-shot learning of an unseen style is only possible if the codec can carry its texture
    (docs/design.md §3): per style, the reconstruction MSE (images in [-1, 1]) and the share of
    reconstructions whose style the judge still reads correctly; per attribute, over all styles,
    the share the judge reads correctly in the renders and in their reconstructions. Seeds are the
    judges' "fresh" range, which neither the VAE nor the judges were trained on.
    """
    report: dict[str, Any] = {"per_style": {}, "held_out": list(HELD_OUT_STYLES), "n_per_style": per_style}
    rendered: dict[str, list[float]] = {name: [] for name in ATTRIBUTES}
    reconstructed: dict[str, list[float]] = {name: [] for name in ATTRIBUTES}
    for k, style in enumerate(STYLES):
        seeds = range(seed + k * per_style, seed + (k + 1) * per_style)
        drawn = [render_seed(s, style=style) for s in seeds]
        x = _to_tensor([image for image, _, _ in drawn])
        attrs = [a for _, _, a in drawn]
        rec = _roundtrip(vae, x)
        hits = judges.predict_indices(rec, value_range=(-1.0, 1.0))["style"] == k
        report["per_style"][style] = {
            "mse": float(torch.mean((rec - x) ** 2)),
            "judged_style_accuracy": float(hits.float().mean()),
        }
        for store, images in ((rendered, x), (reconstructed, rec)):
            for name, acc in attribute_agreement(judges, images, attrs, value_range=(-1.0, 1.0)).items():
                store[name].append(acc)
    # The UNet can only draw what the codec carries: an attribute the judge misses in the
    # reconstructions (eyes are a few pixels) is a ceiling for the base model too.
    report["attributes_rendered"] = {n: float(np.mean(v)) for n, v in rendered.items()}
    report["attributes_reconstructed"] = {n: float(np.mean(v)) for n, v in reconstructed.items()}
    return report


# ----------------------------------------------------------------------------- grounded words


def heat_iou(heat: np.ndarray, mask: np.ndarray, threshold: float = GROUNDING_THRESHOLD) -> float:
    """IoU of a heat map scaled to [0, 1], thresholded at ``threshold``, with a boolean mask."""
    on = heat >= threshold
    union = np.logical_or(on, mask).sum()
    return float(np.logical_and(on, mask).sum() / union) if union else float("nan")


def perfect_heat(mask: np.ndarray, sides: list[int]) -> np.ndarray:
    """The heat map a perfectly grounded word would have at the model's attention resolutions,
    aggregated as the book's figure does (every layer, bilinear, scaled to its maximum).

    Each layer of latent side ``s`` (one entry per layer) can at best put its attention on the
    share of each of its s x s cells that the region covers; the heat map then averages the layers
    upsampled bilinearly and scales to its maximum, as :meth:`AttentionRecorder.aggregate` does.
    Scored by :func:`heat_iou`, it is the ceiling of the mIoU at those resolutions: small regions
    (eyes, a mouth) cannot reach 1 on a 16 x 16 latent, however well the word is grounded.
    """
    region = torch.from_numpy(mask.astype(np.float32))[None, None]
    heat = torch.zeros(mask.shape)
    for side in sides:
        cells = F.adaptive_avg_pool2d(region, side)
        heat += F.interpolate(cells, size=mask.shape, mode="bilinear", align_corners=False)[0, 0]
    peak = float(heat.max())
    return (heat / peak if peak > 0 else heat).numpy()


# DAAM (Tang et al., ACL 2023; castorini/daam, ``trace.py`` and ``heatmap.py``) hooks the
# cross-attention of the UNet's down and up blocks only: the middle block, the coarsest layer, is
# not located, and maps at 1/8 of SD's latent side are skipped.
DAAM_SKIPPED_BLOCKS = ("mid_block",)


def daam_heat(layer_maps: list[torch.Tensor], latent_side: int, size: tuple[int, int]) -> np.ndarray:
    """DAAM's word heat map from one (h, w) map per layer (each summed over steps).

    Each layer's map is upsampled bicubically to the latent side and clamped at 0, the layers are
    averaged, and the result is upsampled bicubically to the picture and min-max normalised to
    [0, 1]. Thresholded at 0.4 (:func:`heat_iou`), it is the map DAAM scores against masks.
    """
    latent = torch.zeros(latent_side, latent_side)
    for m in layer_maps:
        latent += F.interpolate(m.float()[None, None], size=(latent_side, latent_side), mode="bicubic",
                                align_corners=False)[0, 0].clamp_min(0)
    latent /= max(len(layer_maps), 1)
    heat = F.interpolate(latent[None, None], size=size, mode="bicubic", align_corners=False)[0, 0]
    low, high = float(heat.min()), float(heat.max())
    return ((heat - low) / (high - low + 1e-8)).numpy()


def daam_layers(recorder: Any) -> list[str]:
    """The recorded layers DAAM aggregates: every cross-attention layer outside the middle block."""
    return [n for n in recorder.layers() if not n.startswith(DAAM_SKIPPED_BLOCKS)]


def daam_heats(recorder: Any, targets: dict[str, list[int]], size: tuple[int, int],
               branch: str = "sty", image: int = 0) -> dict[str, np.ndarray]:
    """DAAM's heat map of each word ``{label: token indices}`` (a word's tokens averaged, as DAAM
    merges them) from an :class:`~styo.attention.AttentionRecorder`'s maps; each layer is summed
    over steps once for all the words."""
    b = recorder.branches.index(branch)
    layers = daam_layers(recorder)
    per_layer = [sum(m[b, image] for m in recorder.maps[n].values()) for n in layers]
    latent = max(max(recorder.sizes[n]) for n in layers)
    return {label: daam_heat([m[..., list(tokens)].mean(-1) for m in per_layer], latent, size)
            for label, tokens in targets.items()}


def perfect_daam_heat(mask: np.ndarray, sides: list[int]) -> np.ndarray:
    """:func:`perfect_heat` aggregated by DAAM's protocol (``sides``: the layers DAAM keeps)."""
    region = torch.from_numpy(mask.astype(np.float32))[None, None]
    cells = [F.adaptive_avg_pool2d(region, side)[0, 0] for side in sides]
    return daam_heat(cells, max(sides), mask.shape)


def where_words_land(
    pipe: Any,
    segmenter: Any,
    prompt: str,
    words: list[str],
    *,
    seed: int = 0,
    steps: int = 25,
    guidance: float = 5.0,
    regions: tuple[str, ...] = ("head", "face", "hair", "body", "background"),
) -> dict[str, Any]:
    """Where each of ``words`` attends on the picture ``prompt`` draws: per judged region, the
    share of the word's heat inside it and the IoU of its thresholded map (DAAM's protocol).

    For words no mask names, such as the identifiers IDL binds (``sks``, ``m4a1``) or ``not``:
    FCC copies the maps of ``[C_src] not [C_tgt] portrait``, so whether those maps cover the head
    decides what FCC can carry from the source. A word that occurs several times is summed.
    """
    from ..generate import generate_with_attention
    from .render import region_masks

    image, recorder = generate_with_attention(pipe, prompt, seed=seed, num_inference_steps=steps,
                                              guidance_scale=guidance, progress=False)
    maps = recorder.aggregate(words, branch="sty")
    masks = region_masks(segmenter.regions([image])[0])
    out = {}
    for word, heat in maps.items():
        total = float(heat.sum()) or 1.0
        out[word] = {r: {"share": float(heat[masks[r]].sum() / total),
                         "iou": heat_iou(heat, masks[r]),
                         "region_share": float(masks[r].mean())} for r in regions}
    return {"prompt": prompt, "seed": seed, "words": out, "image": image}


def head_centre(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) centroid of a head mask in pixels, or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def evaluate_grounding(
    pipe: Any,
    segmenter: Any,
    combos: list[tuple[str, dict[str, str]]],
    *,
    steps: int = 25,
    guidance: float = 5.0,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Where each word's cross-attention lands on the model's own pictures (DAAM's protocol).

    Each plain caption is sampled once (seed ``seed + i``) with its cross-attention recorded; the
    segmentation judge reads the picture's regions. Every grounded word of the caption (attribute
    values and nouns, ``glasses``, ``portrait``: :func:`styo.world.grounding.grounded_words`) gets
    its heat map by DAAM's protocol (:func:`daam_heats`: every step, the layers outside the
    middle block, min-max normalised) thresholded at :data:`GROUNDING_THRESHOLD` and scored by IoU
    against the judged region it names. A word whose region the judge does not find in the picture
    is not scored (counted as ``absent``).

    Returns per-target mean IoU, their mean, the ceiling a perfectly grounded word would reach at
    the model's attention resolutions (:func:`perfect_daam_heat`) on the same pictures, per-image
    records and the head-centre spread; ``all_layers`` holds the same figures for the book's
    figure's aggregation (every layer, the middle block too, scaled to the maximum), which earlier
    measurements used.
    """
    from ..generate import generate_with_attention
    from .render import region_masks

    protocols = ("daam", "all_layers")
    perfect = {"all_layers": perfect_heat, "daam": perfect_daam_heat}
    scores: dict[str, dict[str, list[float]]] = {p: {} for p in protocols}
    ceilings: dict[str, dict[str, list[float]]] = {p: {} for p in protocols}
    absent: dict[str, int] = {}
    records, centres, images = [], [], []
    for i, (style, attrs) in enumerate(tqdm(combos, desc="grounding", disable=not progress)):
        prompt = plain_caption(style, attrs)
        image, recorder = generate_with_attention(
            pipe, prompt, seed=seed + i, num_inference_steps=steps, guidance_scale=guidance,
            progress=False)
        words = prompt.split()
        targets = {f"{pos}:{words[pos]}": (pos, target) for pos, target in grounded_words(prompt)}
        positions = {k: [pos + 1] for k, (pos, _) in targets.items()}
        heat = {"all_layers": recorder.aggregate(positions, branch="sty"),
                "daam": daam_heats(recorder, positions, recorder.image_size)}
        masks = region_masks(segmenter.regions([image])[0])
        sides = {"all_layers": [max(recorder.sizes[n]) for n in recorder.layers()],
                 "daam": [max(recorder.sizes[n]) for n in daam_layers(recorder)]}
        ceiling: dict[tuple[str, str], float] = {}  # (protocol, target): words of a region share it
        per_word = {}
        for key, (_, target) in targets.items():
            if not masks[target].any():
                absent[target] = absent.get(target, 0) + 1
                continue
            word = {"target": target}
            for p in protocols:
                if (p, target) not in ceiling:
                    ceiling[p, target] = heat_iou(perfect[p](masks[target], sides[p]), masks[target])
                iou = heat_iou(heat[p][key], masks[target])
                scores[p].setdefault(target, []).append(iou)
                ceilings[p].setdefault(target, []).append(ceiling[p, target])
                suffix = "" if p == "daam" else "_all_layers"
                word |= {f"iou{suffix}": iou, f"ceiling{suffix}": ceiling[p, target]}
            per_word[key] = word
        centre = head_centre(masks["head"])
        if centre is not None:
            centres.append(centre)
        records.append({"prompt": prompt, "seed": seed + i, "words": per_word, "head_centre": centre})
        images.append(image)

    def summary(p: str) -> dict[str, Any]:
        per_target = {t: float(np.mean(v)) for t, v in sorted(scores[p].items())}
        return {"miou_per_target": per_target,
                "ceiling_per_target": {t: float(np.mean(v)) for t, v in sorted(ceilings[p].items())},
                "miou": float(np.mean(list(per_target.values()))) if per_target else float("nan"),
                "min_target_miou": float(min(per_target.values())) if per_target else float("nan")}

    spread = np.std(np.asarray(centres), axis=0).tolist() if centres else [float("nan")] * 2
    return {
        "n": len(combos), "steps": steps, "guidance": guidance, "seed": seed,
        "threshold": GROUNDING_THRESHOLD, "protocol": "daam",
        **summary("daam"),
        "all_layers": summary("all_layers"),
        "words_scored": {t: len(v) for t, v in sorted(scores["daam"].items())},
        "words_absent": absent,
        "head_centre_std_px": {"x": spread[0], "y": spread[1]},
        "per_image": records,
        "images": images,
    }


def name_fidelity(pipe: Any, judges: Judges, count: int, num_images: int = 4, seed: int = 0,
                  num_inference_steps: int = 20, guidance_scale: float = 7.5) -> dict[str, Any]:
    """Whether a model pretrained with a cast (:mod:`styo.world.people`) draws each person by name.

    Person ``k`` is drawn with ``a drawing with <style> style of <name> portrait``, the style
    cycling through the pretraining styles, ``num_images`` pictures from a generator seeded
    ``seed + k``. ``kept`` is the mean share of the person's face attributes the judges read in
    them; ``another`` scores the same pictures against the next person's face, which is what any
    face scores by chance; ``style`` is the captioned style's mean probability.
    """
    from .judges import content_fidelity, style_fidelity
    from .people import FACE_ATTRIBUTES, faces, names

    cast, looks = names(count), faces(count)
    per_person = []
    for k, name in enumerate(cast):
        style = PRETRAIN_STYLES[k % len(PRETRAIN_STYLES)]
        images = pipe(f"a drawing with {style} style of {name} portrait", num_images_per_prompt=num_images,
                      generator=torch.Generator("cpu").manual_seed(seed + k),
                      num_inference_steps=num_inference_steps, guidance_scale=guidance_scale).images
        per_person.append({
            "name": name, "style": style,
            "kept": content_fidelity(judges, images, looks[k], list(FACE_ATTRIBUTES)),
            "another": content_fidelity(judges, images, looks[(k + 1) % count], list(FACE_ATTRIBUTES)),
            "style_probability": style_fidelity(judges, images, style),
        })
    mean = lambda key: float(np.mean([p[key] for p in per_person]))  # noqa: E731
    return {"kept": mean("kept"), "another": mean("another"), "style": mean("style_probability"),
            "people": per_person, "images_per_person": num_images}
