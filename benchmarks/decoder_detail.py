"""How much of the face's small parts an autoencoder carries: decoders side by side.

The UNet draws through the decoder, so a part the decoder paints broken is broken in every
picture the model makes, and the segmentation judge, which the word maps are scored against,
finds only fragments of it. For each VAE given (a pipeline folder or an AutoencoderKL folder), on
``--n`` fresh renders (every style, held-out ones too, the varied layout, seeds nothing trains
on), encoded to the posterior mean and decoded:

- ``seg``: the IoU between the segmentation judge's region on the reconstruction and the
  renderer's region, per region, the eyes per shape (a closed eye is a line one or two pixels
  tall); ``seg renders`` is the judge on the renders themselves, its own ceiling;
- ``codec``: `styo.world.evaluate.codec_report` (reconstruction MSE and judged style per style,
  attributes the attribute judge reads in the reconstructions).

    .venv/bin/python benchmarks/decoder_detail.py --vae stage2b=models/styo-mini-vae --vae w8d=runs/v4

Writes benchmarks/results/decoder-detail.{json,md} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from styo.book.results import markdown_table
from styo.world.attributes import ATTRIBUTES, STYLES
from styo.world.evaluate import codec_report, reconstruct
from styo.world.judges import FRESH_SEED_BASE, load_judges
from styo.world.render import REGIONS, render_batch
from styo.world.segmenter import iou_per_region, load_segmenter

REGIONS_SCORED = ("face", "hair", "eyes", "mouth", "glasses")
RENDER_SEEDS = FRESH_SEED_BASE + 600_000  # fresh renders, apart from word_maps_on_renders.py's


def load_vae(path: str) -> AutoencoderKL:
    folder = Path(path)
    return AutoencoderKL.from_pretrained(folder / "vae" if (folder / "vae").is_dir() else folder,
                                         use_safetensors=True)


def _key(region: str, attributes: dict[str, str]) -> str:
    return f"eyes/{attributes['eyes']}" if region == "eyes" else region


@torch.no_grad()
def reconstructed(vae: AutoencoderKL, images: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(im) for im in reconstruct(vae, [Image.fromarray(a) for a in images])])


def judged_iou(images: np.ndarray, regions: np.ndarray, attrs: list[dict[str, str]]) -> dict[str, float]:
    """Mean IoU of the segmentation judge's regions on ``images`` with the renderer's ``regions``."""
    scores: dict[str, list[float]] = {}
    for judged, truth, a in zip(load_segmenter().regions(images), regions, attrs, strict=True):
        iou = iou_per_region(judged, truth)
        for region in REGIONS_SCORED:
            if (truth == REGIONS.index(region)).any():
                scores.setdefault(_key(region, a), []).append(iou[region])
    out = {k: float(np.mean(v)) for k, v in scores.items()}
    out["eyes"] = float(np.mean([x for k, v in scores.items() if k.startswith("eyes/") for x in v]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--n", type=int, default=280, help="fresh renders")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if args.n < 1:
        raise SystemExit("--n must be positive")
    images, _, attrs, regions = render_batch(range(RENDER_SEEDS, RENDER_SEEDS + args.n), styles=STYLES,
                                             layout="varied", regions=True)
    judges = load_judges()
    results = {"renders": {"seg": judged_iou(images, regions, attrs)}}
    for name, path in (v.split("=", 1) for v in args.vae):
        vae = load_vae(path)
        results[name] = {"vae": path, "seg": judged_iou(reconstructed(vae, images), regions, attrs),
                         "codec": codec_report(vae, judges)}
    keys = ["face", "hair", "mouth", "glasses", "eyes", *(f"eyes/{s}" for s in ATTRIBUTES["eyes"])]
    table = [{"figure": f"judged {k} IoU", **{n: r["seg"][k] for n, r in results.items()}} for k in keys]
    coded = {n: r["codec"] for n, r in results.items() if "codec" in r}
    table += [{"figure": f"{style} MSE", "renders": float("nan"),
               **{n: c["per_style"][style]["mse"] for n, c in coded.items()}} for style in STYLES]
    table += [{"figure": f"{style} judged style", "renders": 1.0,
               **{n: c["per_style"][style]["judged_style_accuracy"] for n, c in coded.items()}} for style in STYLES]
    table += [{"figure": f"{a} judged", "renders": next(iter(coded.values()))["attributes_rendered"][a],
               **{n: c["attributes_reconstructed"][a] for n, c in coded.items()}} for a in ("eyes", "mouth", "glasses")]
    command = "benchmarks/decoder_detail.py " + " ".join(f"--vae {v}" for v in args.vae) + f" --n {args.n}"
    report = {"kind": "decoder-detail", "command": command, "n": args.n, "machine": platform.machine(),
              "torch": torch.__version__, "results": results}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decoder-detail.json").write_text(json.dumps(report, indent=1))
    md = ["# The face's small parts through the autoencoder", "", f"`{command}`", "",
          f"`judged … IoU`: the segmentation judge's region on the reconstruction of {args.n} fresh renders "
          "(every style, varied layout, posterior mean) against the renderer's region; the `renders` "
          "column is the judge on the renders themselves. `MSE`, `judged style`, `… judged`: "
          "`codec_report` (40 fresh centred renders per style; the attribute judge's accuracy on the "
          "reconstructions, `renders` on the renders).", "",
          markdown_table(table, list(table[0]), decimals=3), ""]
    (out / "decoder-detail.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
