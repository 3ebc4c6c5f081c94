"""Word maps on renders and on the model's own pictures: where a region word's mIoU is lost.

`attention_grounding.py` scores each word's map, by DAAM's protocol, on the model's own pictures
against the segmentation judge's regions. A low figure there can come from the maps or from the
pictures. This script tells the two apart, per model:

- ``renders``: ``--n`` fresh renders (varied layout, pretraining styles, seeds no training uses),
  each encoded, noised to timestep ``--t`` and passed once through the UNet with its plain
  caption. Each grounded word's map is aggregated as DAAM does (the cross-attention layers outside
  the middle block, each upsampled bicubically to the latent side, averaged, upsampled to the
  picture, min-max normalised, thresholded at 0.4) and scored against the renderer's own region.
  These are the maps pretraining's losses train, on the pictures they were trained on.
- ``own``: the model's own pictures, measured exactly as `attention_grounding.py` does
  (`evaluate_grounding`, 25 DDIM steps, guidance 5), on the first ``--n-own`` of the same unseen
  caption combinations.

The eyes are split by the shape the caption names (round, narrow, closed): a closed eye is a
line one or two pixels tall.

    .venv/bin/python benchmarks/word_maps_on_renders.py --model v3=models/styo-mini --n 96 --n-own 60

Writes benchmarks/results/word-maps-on-renders.{json,md} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from styo.book.results import markdown_table
from styo.pipeline import load_pipeline
from styo.world.attributes import ATTRIBUTES
from styo.world.captions import plain_caption
from styo.world.evaluate import (
    daam_heat,
    evaluate_grounding,
    heat_iou,
    heldout_combinations,
    training_combinations,
)
from styo.world.grounding import WORD_TARGETS, grounded_words, install
from styo.world.judges import FRESH_SEED_BASE
from styo.world.render import region_masks, render_batch
from styo.world.segmenter import load_segmenter

EYE_SHAPES = ATTRIBUTES["eyes"]
RENDER_SEEDS = FRESH_SEED_BASE + 500_000  # fresh renders, apart from the judges' own fresh range


def _key(target: str, caption: str) -> str:
    """The word's region, the eyes split by the shape their caption names."""
    if target != "eyes":
        return target
    words = caption.split()
    return f"eyes/{words[words.index('eyes') - 1]}"


def _means(scores: dict[str, list[float]]) -> dict[str, float]:
    out = {k: float(np.mean(v)) for k, v in scores.items()}
    eyes = [x for k, v in scores.items() if k.startswith("eyes/") for x in v]
    if eyes:
        out["eyes"] = float(np.mean(eyes))
    return out


@torch.no_grad()
def on_renders(pipe, n: int, t: int, seed: int = 0) -> dict[str, float]:
    """mIoU per region word (eyes per shape too) of one UNet pass over ``n`` noised renders."""
    images, styles, attrs, regions = render_batch(range(RENDER_SEEDS, RENDER_SEEDS + n), layout="varied",
                                                  regions=True)
    captions = [plain_caption(s, a) for s, a in zip(styles, attrs, strict=True)]
    ids = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    z0 = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    alpha = pipe.scheduler.alphas_cumprod[t]
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    processors = dict(pipe.unet.attn_processors)
    store = install(pipe.unet)
    try:
        pipe.unet(alpha.sqrt() * z0 + (1 - alpha).sqrt() * noise, torch.full((n,), t),
                  encoder_hidden_states=pipe.text_encoder(ids)[0])
    finally:
        pipe.unet.set_attn_processor(processors)
    sides = [int(round(m.shape[1] ** 0.5)) for m in store.maps]
    kept = [(m, s) for m, s in zip(store.maps, sides, strict=True) if s > min(sides)]  # not the middle block
    latent = max(sides)
    scores: dict[str, list[float]] = {}
    for b, caption in enumerate(captions):
        masks = region_masks(regions[b])
        for position, target in grounded_words(caption):
            mask = masks[target]
            if not mask.any():
                continue
            layers = [m[b, :, position + 1].reshape(s, s) for m, s in kept]
            heat = daam_heat(layers, latent, mask.shape)
            scores.setdefault(_key(target, caption), []).append(heat_iou(heat, mask))
    return _means(scores)


def on_own_pictures(pipe, combos) -> tuple[dict[str, float], dict[str, int]]:
    """mIoU per region word (eyes per shape too) on the model's own pictures, and the count of
    pictures per eye shape."""
    result = evaluate_grounding(pipe, load_segmenter(), combos, progress=False)
    scores: dict[str, list[float]] = {}
    for record in result["per_image"]:
        for word in record["words"].values():
            scores.setdefault(_key(word["target"], record["prompt"]), []).append(word["iou"])
    counts = {shape: sum(a["eyes"] == shape for _, a in combos) for shape in EYE_SHAPES}
    return _means(scores), counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--n", type=int, default=96, help="fresh renders")
    ap.add_argument("--t", type=int, default=200, help="the renders' noise timestep (0..999)")
    ap.add_argument("--n-own", type=int, default=60, help="the model's own pictures")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if args.n < 1 or args.n_own < 1 or not 0 <= args.t < 1000:
        raise SystemExit("--n and --n-own must be positive and --t in 0..999")
    combos = heldout_combinations(args.n_own, training_combinations(40_000), seed=0)
    results = {}
    for name, path in (m.split("=", 1) for m in args.model):
        pipe = load_pipeline(path)
        own, counts = on_own_pictures(pipe, combos)
        results[name] = {"model": path, "renders": on_renders(pipe, args.n, args.t), "own": own,
                         "own_eye_shapes": counts}
    keys = [*WORD_TARGETS, *(f"eyes/{s}" for s in EYE_SHAPES)]
    table = [{"word's region": k, **{f"{n} {where}": r[where].get(k, float("nan"))
                                     for n, r in results.items() for where in ("renders", "own")}}
             for k in keys]
    command = ("benchmarks/word_maps_on_renders.py " + " ".join(f"--model {m}" for m in args.model)
               + f" --n {args.n} --t {args.t} --n-own {args.n_own}")
    report = {"kind": "word-maps-on-renders", "command": command, "n": args.n, "t": args.t,
              "n_own": args.n_own, "machine": platform.machine(), "torch": torch.__version__,
              "results": results}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "word-maps-on-renders.json").write_text(json.dumps(report, indent=1))
    shapes = ", ".join(f"{s} {c}" for s, c in next(iter(results.values()))["own_eye_shapes"].items())
    md = ["# Word maps on renders and on the model's own pictures", "", f"`{command}`", "",
          f"mIoU by DAAM's protocol. `renders`: {args.n} fresh renders noised to timestep {args.t}, one "
          "UNet pass with the plain caption, against the renderer's regions. `own`: the model's own "
          f"pictures of the first {args.n_own} unseen caption combinations of attention_grounding.py "
          f"(eyes by shape: {shapes} pictures), against the segmentation judge's regions.", "",
          markdown_table(table, list(table[0]), decimals=3), ""]
    (out / "word-maps-on-renders.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
