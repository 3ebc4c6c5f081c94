"""Does FCC act on this model? Attention sharpness, prompt distances, and FCC with wider maps.

FCC replaces the stylization branch's cross-attention maps of the content tokens with the
reconstruction branch's. That can change the picture only if (1) the maps are peaked enough to
carry a layout and (2) the two branches' maps differ. This script measures both on a model, after
one IDL run per pair (the book's example pair first; ``--pairs`` adds the ablations' contrasting
pairs; IDL trains what the model's profile says, ``--[no-]train-text-encoder`` overrides it):

- ``sharpness`` of the cross-attention (:mod:`styo.sharpness`) of the base model and after IDL;
- ``distances``: relative distance between the text encodings of the StyO prompts (how far apart
  the frozen text encoder keeps the identifier orders), with two ordinary word swaps for scale;
- ``identifier maps``: after IDL, where the content phrase's words (``[C_src] not [C_tgt]
  portrait``) and the source style identifier attend on the reconstruction prompt's picture: the
  share of each word's heat on the judged head and background against the regions' share of the
  picture (the miniature world only: its segmentation judge reads 64 px pictures);
- ``fcc``: the judges' scores of the stylization with no control, the paper's content map, and
  every token's map transplanted (the strongest attention control there is), at each strength,
  per pair and averaged over pairs. ``pose`` is the head tilt alone, the layout FCC should keep.

    .venv/bin/python benchmarks/fcc_probe.py                       # the shipped miniature model
    .venv/bin/python benchmarks/fcc_probe.py --model /tmp/snapshot --note "EMA of step 1000"
    .venv/bin/python benchmarks/fcc_probe.py --pairs 3 --strengths 0.8,0.9,1.0
    .venv/bin/python benchmarks/fcc_probe.py --pairs 2 --no-train-text-encoder   # IDL on the UNet only

Writes benchmarks/results/fcc-probe.{json,md} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from styo.book import auxiliary_set, bench_pipeline, cached_idl, with_steps
from styo.book import experiments as X
from styo.book.results import markdown_table
from styo.fcc import encode_prompts
from styo.prompts import source_prompt, stylization_prompt, target_prompt
from styo.sharpness import attention_sharpness

SCORES = ("content", "pose", "leak", "style", "source_style", "other_style")
WHERE = ("head share", "background share", "head iou", "head area")
PROMPTS = {"source": source_prompt(), "target": target_prompt(), "stylization": stylization_prompt()}
# Ordinary word swaps of the miniature world's vocabulary, for the scale of a distance that matters.
REFERENCE_SWAPS = {
    "photo vs sketch style": ("a drawing with photo style of portrait",
                              "a drawing with sketch style of portrait"),
    "red vs blonde hair": ("a drawing with photo style of red hair portrait",
                           "a drawing with photo style of blonde hair portrait"),
}


@torch.no_grad()
def relative_distance(pipe, a: str, b: str) -> float:
    """‖E(a) − E(b)‖ / ‖E(a)‖ over the whole padded sequence the UNet reads."""
    ea, eb = encode_prompts(pipe, [a, b], 1, guidance=False).float()
    return float((ea - eb).norm() / ea.norm())


def distances(pipe) -> dict[str, float]:
    pairs = {"source vs target": (PROMPTS["source"], PROMPTS["target"]),
             "source vs stylization": (PROMPTS["source"], PROMPTS["stylization"]),
             "stylization vs target": (PROMPTS["stylization"], PROMPTS["target"]),
             **REFERENCE_SWAPS}
    return {name: relative_distance(pipe, a, b) for name, (a, b) in pairs.items()}


def content_maps(pipe, n_s: int) -> dict[str, list[tuple[int, int]] | None]:
    """No control, the paper's content tokens (None: computed by stylize), every token (n_s = 1)."""
    maps: dict[str, list[tuple[int, int]] | None] = {"no FCC": [], "FCC (paper)": None}
    if n_s == 1:  # same prompt length in both branches: token i maps to token i
        maps["every token"] = [(i, i) for i in range(pipe.tokenizer.model_max_length)]
    return maps


def identifier_maps(pipe, segmenter, seed: int) -> list[dict]:
    """Where each word of the content phrase lands, on the reconstruction and stylization prompts."""
    from styo.prompts import Identifiers
    from styo.world.evaluate import where_words_land

    ids = Identifiers()
    words = [ids.c_src, "not", ids.c_tgt, "portrait", ids.s_src]
    rows = []
    for name in ("source", "stylization"):
        found = where_words_land(pipe, segmenter, PROMPTS[name], words, seed=seed)
        for word, per_region in found["words"].items():
            rows.append({"prompt": name, "word": word,
                         **{f"{r} share": v["share"] for r, v in per_region.items()
                            if r in ("head", "background")},
                         "head iou": per_region["head"]["iou"],
                         "head area": per_region["head"]["region_share"]})
    return rows


def probe(pipe, settings, pairs: dict, aux, config, strengths, n_s: int, judges,
          n_images: int, seed: int, segmenter=None) -> dict:
    """Sharpness and distances of the base model, then per pair: IDL from the base weights, the
    sharpness after it (first pair), and the judges' scores under each control at each strength."""
    base = {"sharpness": attention_sharpness(pipe, list(PROMPTS.values()), seed=seed),
            "distances": distances(pipe)}
    rows, tuned, idl_s, losses, where = [], None, [], [], []
    for label, pair in pairs.items():
        with X.base_weights(pipe):
            start = time.perf_counter()
            run = cached_idl(pipe, pair.source, pair.target, aux, config)
            idl_s.append(time.perf_counter() - start)
            losses.append(float(sum(run.losses[-10:]) / len(run.losses[-10:])))
            if tuned is None:
                tuned = {"sharpness": attention_sharpness(pipe, list(PROMPTS.values()), seed=seed)}
            if segmenter is not None:
                where += [{"pair": label, **r} for r in identifier_maps(pipe, segmenter, seed)]
            maps = content_maps(pipe, n_s)
            controls = [{"content_map": cmap} if cmap is not None else {} for cmap in maps.values()]
            for strength in strengths:
                scored = X.stylize_rows(pipe, pair, controls, judges=judges, progress=False,
                                        n_s=n_s, n_c=1, strength=strength, seed=seed, num_images=n_images,
                                        num_inference_steps=settings.sample_steps,
                                        guidance_scale=settings.guidance)
                for name, row in zip(maps, scored, strict=True):
                    rows.append({"pair": label, "strength": strength, "control": name,
                                 **{k: row[k] for k in SCORES if k in row}})
                    print(f"{label} strength {strength} {name}: "
                          + ", ".join(f"{k} {row[k]:.2f}" for k in SCORES if k in row), flush=True)
    return {"base": base, "after_idl": tuned, "idl_steps": config.steps,
            "train_text_encoder": config.train_text_encoder, "pairs": list(pairs),
            "idl_s": round(sum(idl_s) / len(idl_s), 1), "idl_loss": sum(losses) / len(losses),
            "fcc": X.mean_rows(rows, ["strength", "control"], SCORES), "fcc_rows": rows,
            "identifier_maps": X.mean_rows(where, ["prompt", "word"], WHERE) if where else [],
            "identifier_map_rows": where}


def write_results(record: dict, out: Path, name: str = "fcc-probe") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    sharp = [{"model": "base", **record["base"]["sharpness"]},
             {"model": f"after IDL ({record['idl_steps']} steps)", **record["after_idl"]["sharpness"]}]
    dist = [{"prompts": k, "relative distance": v} for k, v in record["base"]["distances"].items()]
    lines = ["# Does FCC act on this model?", "",
             f"`benchmarks/fcc_probe.py`, {record['date']}, {record['machine']}, model `{record['model']}`, "
             f"{len(record['pairs'])} pair(s) ({', '.join(record['pairs'])}), {record['n_images']} images "
             f"per setting and pair, n_s = {record['n_s']}, n_c = 1, IDL {record['idl_steps']} steps "
             f"({'UNet and text encoder' if record['train_text_encoder'] else 'UNet only'}).",
             "", *([record["note"], ""] if record.get("note") else []),
             "Cross-attention sharpness (per head and pixel; entropy 1 = uniform over the 77 tokens):", "",
             markdown_table(sharp, ["model", "entropy", "max_prob", "prompt_mass", "padding_mass"], decimals=3),
             "", "Distances between text encodings (the frozen text encoder):", "",
             markdown_table(dist, ["prompts", "relative distance"], decimals=3),
             "", "Stylization under each attention control (mean over pairs):", "",
             markdown_table(record["fcc"], ["strength", "control",
                                            *[k for k in SCORES if k in record["fcc"][0]]], decimals=2)]
    if record.get("identifier_maps"):
        lines += ["", "Where the content phrase's words attend after IDL (mean over pairs; share of the "
                  "word's heat on the judged head and background, against the head's share of the "
                  "picture; head IoU by DAAM's protocol):", "",
                  markdown_table(record["identifier_maps"], ["prompt", "word", *WHERE], decimals=2)]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="pipeline folder (default: the shipped miniature model); "
                    "'tiny' is the random test pipeline")
    ap.add_argument("--idl-steps", type=int, help="IDL steps (default: the profile's)")
    ap.add_argument("--strengths", default="0.8,1.0", help="diffusion depths of the source")
    ap.add_argument("--n-s", type=int, default=1, help="style repeats; 1 also probes every token's map")
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=1, help="(source, target) pairs, the book's first")
    ap.add_argument("--train-text-encoder", action=argparse.BooleanOptionalAction,
                    help="IDL fine-tunes the text encoder too (default: the model's profile)")
    ap.add_argument("--aux", type=int, help="auxiliary portraits (default: the book's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="")
    ap.add_argument("--name", default="fcc-probe", help="file stem of the results (NAME.json, NAME.md)")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    try:
        strengths = [float(s) for s in args.strengths.split(",")]
    except ValueError:
        raise SystemExit(f"--strengths: {args.strengths!r} is not a comma-separated list of numbers") from None
    if not all(0 < s <= 1 for s in strengths) or args.n_images < 1 or args.pairs < 1:
        raise SystemExit("--strengths must lie in (0, 1] and --n-images and --pairs be positive")

    settings, pipe = bench_pipeline(args.model)
    backend = settings.name
    from styo.world.judges import load_judges

    judges = load_judges()
    segmenter = None
    if backend == "mini":
        from styo.world.segmenter import load_segmenter

        segmenter = load_segmenter()
    # photo sources, as in the paper and in the results this probe recorded
    pairs = X.ablation_pairs(backend, X.ablation_seeds(args.pairs), source_styles=["photo"])
    config = replace(with_steps(settings.idl, args.idl_steps or settings.idl.steps),
                     train_text_encoder=settings.idl.train_text_encoder if args.train_text_encoder is None
                     else args.train_text_encoder)
    with tempfile.TemporaryDirectory(prefix="styo-fcc-probe-") as tmp:
        os.environ["STYO_CACHE"] = tmp  # aux set and IDL runs in a throwaway cache
        aux = auxiliary_set(pipe, settings, n=args.aux)
        result = probe(pipe, settings, pairs, aux, config, strengths, args.n_s, judges,
                       args.n_images, args.seed, segmenter)
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": args.model or "models/styo-mini", "n_images": args.n_images,
        "n_s": args.n_s, "note": args.note, **result,
    }
    write_results(record, Path(args.out_dir), args.name)
    print(f"wrote {Path(args.out_dir) / args.name}.json and .md")


if __name__ == "__main__":
    main()
