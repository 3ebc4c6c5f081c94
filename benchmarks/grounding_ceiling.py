"""How high can a word's mIoU go on this UNet at all? The best heat map its attention can make.

DAAM's protocol scores a word by its heat map (the map of each cross-attention layer outside the
UNet's middle block upsampled bicubically to the latent side, averaged over layers, upsampled to
the picture, min-max normalised, thresholded at 0.4) against the region the word names. A layer at latent side ``s`` holds one value per ``s``² cell,
so on the miniature model (16² latents for 64 px pictures) a region a few pixels wide, such as
the eyes or the mouth, cannot be drawn sharply however well the word is grounded.

For every region of ``--n`` rendered portraits (the varied layout, every style; regions from the
renderer's own label map) this script reports two bounds:

- ``coverage``: each layer's cells set to the share of the cell that the region covers, the
  ceiling :func:`styo.world.evaluate.perfect_daam_heat` gives beside the measured mIoU (the
  measurement's own function);
- ``best``: the best on/off pattern of cells found by a search per picture and region (start from
  the covered cells at several cut-offs, then flip single cells in every layer's grid while the
  IoU rises);
- ``graded``: the same with cells free to take any value in [0, 1], found by gradient ascent on a
  soft IoU from the on/off pattern (a value between on and off moves the thresholded edge by less
  than a cell).

Searches, not proofs: the true optimum may be a little higher still (DAAM's clamp of each layer's
bicubic undershoot is left out here), so a region whose ``graded`` sits well below a target is
out of reach on this architecture, one near it is not shown to be.

    .venv/bin/python benchmarks/grounding_ceiling.py --n 120

Writes benchmarks/results/grounding-ceiling.{json,md} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from styo.world.evaluate import daam_heat, heat_iou, perfect_daam_heat
from styo.world.grounding import GROUNDING_THRESHOLD as THRESHOLD
from styo.world.grounding import WORD_TARGETS as TARGETS
from styo.world.grounding import threshold_loss

ROOT = Path(__file__).resolve().parent.parent
MIOU_TARGET, REGION_TARGET = 0.60, 0.40


def layer_sides(unet_config: dict) -> list[int]:
    """The latent side of every cross-attention layer of a diffusers UNet2DConditionModel that
    DAAM aggregates (the down and up blocks: it does not hook the middle block)."""
    side, n = unet_config["sample_size"], len(unet_config["down_block_types"])
    per_block = unet_config["layers_per_block"]
    sides = []
    for i, kind in enumerate(unet_config["down_block_types"]):
        if kind.startswith("CrossAttn"):
            sides += [side // 2 ** i] * per_block
    for j, kind in enumerate(unet_config["up_block_types"]):
        if kind.startswith("CrossAttn"):
            sides += [side // 2 ** (n - 1 - j)] * (per_block + 1)
    return sides


def cell_bases(sides: list[int], size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The heat each cell of each distinct side adds at image resolution (bicubic to the latent
    side, then to the picture, as DAAM; weighted by how many layers have that side), as rows of a
    (cells, size²) matrix, and (side, cell) labels."""
    counts = {s: sides.count(s) for s in sorted(set(sides), reverse=True)}
    latent = max(sides)
    rows, labels = [], []
    for s, k in counts.items():
        eye = torch.eye(s * s).view(s * s, 1, s, s)
        up = F.interpolate(eye, size=(latent, latent), mode="bicubic", align_corners=False)
        up = F.interpolate(up, size=(size, size), mode="bicubic", align_corners=False)
        rows.append(up.view(s * s, -1).numpy() * k / len(sides))
        labels += [(s, c) for c in range(s * s)]
    return np.concatenate(rows), labels


def iou(heat: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the min-max normalised heat map, thresholded as the measurement does, with ``mask``."""
    low, high = heat.min(), heat.max()
    return heat_iou((heat - low) / (high - low), mask) if high > low else 0.0


def coverage_of(mask: np.ndarray, labels: list[tuple[int, int]]) -> np.ndarray:
    """Share of each cell that ``mask`` covers, in the order of ``labels``."""
    region = torch.from_numpy(mask.astype(np.float32))[None, None]
    out = []
    for s in sorted({s for s, _ in labels}, reverse=True):
        out.append(F.adaptive_avg_pool2d(region, s).flatten().numpy())
    return np.concatenate(out)


def best_pattern(mask: np.ndarray, bases: np.ndarray, labels: list[tuple[int, int]],
                 sides: list[int], passes: int = 4) -> tuple[float, float, np.ndarray]:
    """(coverage bound, searched on/off bound, the searched pattern) of one region on one picture."""
    flat = mask.reshape(-1)
    cover = coverage_of(mask, labels)
    coverage_iou = heat_iou(perfect_daam_heat(mask, sides), mask)
    best, best_on = -1.0, None
    for cut in (0.1, 0.25, 0.4, 0.5, 0.6, 0.75):
        on = cover >= cut
        if not on.any():
            continue
        score = iou(on.astype(np.float32) @ bases, flat)
        if score > best:
            best, best_on = score, on.copy()
    if best_on is None:
        return coverage_iou, coverage_iou, cover
    heat = best_on.astype(np.float32) @ bases
    # Flip cells near the region only: a cell whose upsampled footprint misses the region can
    # only add false positives when switched on.
    near = np.flatnonzero((bases @ flat.astype(np.float32)) > 0)
    for _ in range(passes):
        improved = False
        for c in near:
            trial = heat - bases[c] if best_on[c] else heat + bases[c]
            score = iou(trial, flat)
            if score > best + 1e-9:
                best, heat, best_on[c], improved = score, trial, not best_on[c], True
        if not improved:
            break
    if coverage_iou > best:
        return coverage_iou, coverage_iou, cover
    return coverage_iou, best, best_on.astype(np.float32)


def protocol_iou(pattern: np.ndarray, labels: list[tuple[int, int]], sides: list[int], mask: np.ndarray) -> float:
    """The IoU of a cell pattern scored by the measurement's own function: every layer of side
    ``s`` holds the pattern's ``s``² cells, aggregated by :func:`styo.world.evaluate.daam_heat`
    (with DAAM's clamp, which the linear ``bases`` leave out)."""
    cells = {s: torch.from_numpy(pattern[[i for i, (side, _) in enumerate(labels) if side == s]]).view(s, s)
             for s in set(sides)}
    return heat_iou(daam_heat([cells[s] for s in sides], max(sides), mask.shape), mask)


def graded_pattern(mask: np.ndarray, bases: np.ndarray, start: np.ndarray, steps: int = 150) -> np.ndarray:
    """The best pattern found when cells may hold any value in [0, 1], not just on or off:
    gradient descent on pretraining's threshold loss at the picture's resolution (the 0.4
    threshold a sigmoid, here one that sharpens as it goes) from the ``start`` pattern, every
    iterate scored with the hard threshold. A value
    between on and off moves where the upsampled map crosses the threshold by less than a cell,
    which an on/off pattern cannot do."""
    flat = mask.reshape(-1)
    region = torch.from_numpy(mask.astype(np.float32))[None, None]  # one target, for threshold_loss
    word = torch.tensor([0])  # row, token and target of the one map
    basis = torch.from_numpy(bases)
    logits = torch.logit(torch.from_numpy(start).float().clamp(0.05, 0.95)).requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    best_pattern = start.astype(np.float32)
    best = iou(best_pattern @ bases, flat)
    for step in range(steps):
        heat = torch.sigmoid(logits) @ basis
        sharpness = 0.05 * (0.1 ** (step / steps))  # 0.05 down to 0.005 of the range
        loss = threshold_loss(heat[None, :, None], word, word, word, region, temperature=sharpness)
        optimiser.zero_grad()
        loss.backward()
        score = iou(heat.detach().numpy(), flat)
        if score > best:
            best, best_pattern = score, torch.sigmoid(logits).detach().numpy().copy()
        optimiser.step()
    return best_pattern


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "styo-mini"), help="pipeline folder (its UNet's config)")
    ap.add_argument("--n", type=int, default=120, help="rendered portraits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="grounding-ceiling")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.n < 1:
        raise SystemExit("--n must be at least 1")
    config_path = Path(args.model) / "unet" / "config.json"
    if not config_path.is_file():
        raise SystemExit(f"{config_path} not found: --model must be a pipeline folder")

    from tqdm.auto import tqdm

    from styo.book.results import markdown_table
    from styo.world.render import region_masks
    from styo.world.segmenter import eval_seeds, render_labelled

    start = time.perf_counter()
    sides = layer_sides(json.loads(config_path.read_text()))
    _, regions = render_labelled(eval_seeds(args.seed, args.n), progress=False)
    size = regions.shape[-1]
    bases, labels = cell_bases(sides, size)
    bounds = ("coverage", "best", "graded")
    scores: dict[str, dict[str, list[float]]] = {t: {k: [] for k in bounds} for t in TARGETS}
    for region_map in tqdm(regions.numpy(), desc="regions", mininterval=5.0):
        masks = region_masks(region_map)
        for target in TARGETS:
            if masks[target].any():
                cov, best, pattern = best_pattern(masks[target], bases, labels, sides)
                scores[target]["coverage"].append(cov)
                scores[target]["best"].append(best)
                graded = graded_pattern(masks[target], bases, pattern)
                scores[target]["graded"].append(protocol_iou(graded, labels, sides, masks[target]))
    per_target = {t: {k: float(np.mean(v)) for k, v in s.items()} | {"n": len(s["best"])}
                  for t, s in scores.items()}
    means = {k: float(np.mean([per_target[t][k] for t in TARGETS])) for k in bounds}
    record = {"date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, torch {torch.__version__}",
              "model": args.model, "layer_sides": sides, "n": args.n, "seed": args.seed,
              "threshold": THRESHOLD, "per_target": per_target, "mean": means,
              "seconds": round(time.perf_counter() - start, 1)}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    rows = [{"region": t, "pictures": per_target[t]["n"], **{k: per_target[t][k] for k in bounds},
             "reaches 0.40": "yes" if per_target[t]["graded"] >= REGION_TARGET else "no"} for t in TARGETS]
    rows.append({"region": "mean", "pictures": "", **means,
                 "reaches 0.40": f"mean target {MIOU_TARGET:.2f}: "
                                 + ("reachable" if means["graded"] >= MIOU_TARGET else "out of reach")})
    lines = ["# The highest mIoU a word's heat map can reach on this UNet", "",
             f"`benchmarks/grounding_ceiling.py --n {args.n}`, {record['date']}, model `{args.model}` "
             f"(the cross-attention layers DAAM aggregates, at latent sides {sides}), {args.n} rendered portraits (varied layout, every "
             f"style), the renderer's own regions, DAAM's aggregation and threshold {THRESHOLD}.", "",
             "`coverage`: every layer's cells at the share of the cell the region covers. `best`: the best "
             "on/off pattern of cells a per-picture search found (several cut-offs, then single-cell "
             "flips while the IoU rises). `graded`: the best found when the cells may take any value in "
             "[0, 1] (gradient ascent on a soft IoU from the on/off pattern, each step scored with the "
             "hard threshold; the best pattern then scored by the measurement's own aggregation, "
             "DAAM's clamp included): what a perfectly grounded word could score at best, to within the "
             "searches' reach.", "",
             markdown_table(rows, ["region", "pictures", *bounds, "reaches 0.40"], decimals=3)]
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-1:]))
    print(f"wrote {out / args.name}.json and .md")


if __name__ == "__main__":
    main()
