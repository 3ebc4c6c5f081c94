"""Where each word's cross-attention lands, and what the model draws: base models side by side.

For every model given, on the same unseen caption combinations (plain captions of (style,
attributes) pairs that no pretraining image has):

- ``grounding``: DAAM's protocol on the model's own pictures (``styo world grounding``): each
  grounded word's heat map (every step, the cross-attention layers outside the UNet's middle
  block as DAAM hooks them, min-max normalised, thresholded at 0.4) against the segmentation
  judge's region it names; mean IoU per region, their mean and minimum; and the mean by the
  book's figure's aggregation (every layer, the middle block too, scaled to its maximum), which
  measurements before this protocol used;
- ``sharpness``: normalised entropy, largest probability, prompt and padding mass of the maps;
- ``quality``: the judges' captioned style and attribute accuracy (``styo world evaluate``);
- ``layout``: the spread of the judged head centre over the pictures, in pixels.

    .venv/bin/python benchmarks/attention_grounding.py --model v1=models/styo-mini \\
        --model v2=runs/grounded/out --n 120

Writes benchmarks/results/attention-grounding.{json,md} (or --out-dir, --name). The command
recorded in both names every option that differs from its default, so it reruns as it ran.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from styo.book.results import markdown_table
from styo.pipeline import load_pipeline
from styo.sharpness import attention_sharpness
from styo.world.captions import plain_caption
from styo.world.evaluate import (
    evaluate_base_model,
    evaluate_grounding,
    heldout_combinations,
    training_combinations,
)
from styo.world.grounding import WORD_TARGETS
from styo.world.judges import load_judges
from styo.world.pretrain import PretrainConfig
from styo.world.segmenter import load_segmenter

PROTOCOL = "daam"
N_TRAIN = PretrainConfig.n_images  # pretraining's draw of (style, attributes) combinations, which the captions avoid
# The options that decide what a row measures: a report stores them, --previous compares them and
# the recorded command names them.
MEASURED_WITH = ("n", "steps", "guidance", "seed", "n_train")


def measure(model: str, combos, steps: int, guidance: float, seed: int) -> dict:
    pipe = load_pipeline(model)
    t0 = time.perf_counter()
    ground = evaluate_grounding(pipe, load_segmenter(), combos, steps=steps, guidance=guidance,
                                seed=seed)
    ground.pop("images")
    quality = evaluate_base_model(pipe, load_judges(), combos, steps=steps, guidance=guidance,
                                  seed=seed)
    quality.pop("images")
    prompts = [plain_caption(s, a) for s, a in combos]
    sharp = attention_sharpness(pipe, prompts[:24], num_inference_steps=10, seed=seed)
    return {"model": model, "grounding": ground, "quality": quality, "sharpness": sharp,
            "seconds": round(time.perf_counter() - t0, 1)}


def rows(results: dict[str, dict]) -> list[dict]:
    out = []
    for name, r in results.items():
        g, q, s = r["grounding"], r["quality"], r["sharpness"]
        row = {"model": name}
        row |= {f"mIoU {t}": g["miou_per_target"].get(t, float("nan")) for t in WORD_TARGETS}
        row |= {f"ceiling {t}": g["ceiling_per_target"].get(t, float("nan")) for t in WORD_TARGETS}
        row |= {"mIoU mean": g["miou"], "mIoU lowest": g["min_target_miou"],
                "mIoU mean, all layers": g["all_layers"]["miou"], "padding mass": s["padding_mass"],
                "entropy": s["entropy"], "max prob": s["max_prob"], "prompt mass": s["prompt_mass"],
                "style": q["style_accuracy"], "attributes": q["mean_attribute_accuracy"],
                "eyes": q["attribute_accuracy"]["eyes"],
                "head x spread px": g["head_centre_std_px"]["x"],
                "head y spread px": g["head_centre_std_px"]["y"]}
        out.append(row)
    return out


def side_by_side(table: list[dict]) -> str:
    """One row per figure, one column per model."""
    names = [r["model"] for r in table]
    metrics = [k for k in table[0] if k != "model"]
    lines = [{"figure": m, **{r["model"]: r[m] for r in table}} for m in metrics]
    return markdown_table(lines, ["figure", *names], decimals=2)


def as_flags(options: dict) -> str:
    """``{"n_train": 50}`` as ``--n-train 50``."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())


def recorded_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The command that measures this run's rows again: its models, its --previous files, --n, and
    every other option that differs from its default (the captions and the noise hang on --seed and
    --n-train)."""
    others = {k: getattr(args, k) for k in (*MEASURED_WITH, "name") if k != "n"}
    changed = {k: v for k, v in others.items() if v != parser.get_default(k)}
    parts = [*(f"--model {m}" for m in args.model), *(f"--previous {p}" for p in args.previous),
             f"--n {args.n}", *([as_flags(changed)] if changed else [])]
    return "benchmarks/attention_grounding.py " + " ".join(parts)


def write_report(report: dict, out: Path, name: str) -> None:
    """``NAME.json`` (the report) and ``NAME.md`` (its table), the second made from the first
    alone, so a committed table can be checked against its record."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    commands = report["commands"]
    md = [f"# Attention grounding of the base models ({report['n']} unseen caption combinations)", "",
          *(f"`{c}`" + ("  " if i < len(commands) - 1 else ";") for i, c in enumerate(commands)),
          f"DDIM {report['steps']} steps, guidance {report['guidance']}, seed {report['seed']}. "
          "mIoU: DAAM's protocol (castorini/daam: the word's cross-attention over every step and every "
          "layer outside the UNet's middle block, each layer upsampled bicubically to the latent side, "
          "averaged, upsampled to the picture, min-max normalised, thresholded at 0.4) against the "
          "segmentation judge's region on the model's own picture; `head` is `portrait` (and tilt "
          "words). `mIoU mean, all layers`: the same words aggregated as the book's figure does "
          "(every layer, the middle block's 4² one too, scaled to the maximum), the only figure "
          "measured before. Targets: mean ≥ 0.60, every region ≥ 0.40, padding ≤ 0.30, style ≥ 0.95, "
          "attributes ≥ 0.85, eyes ≥ 0.60. `ceiling`: the mIoU a word would reach on the same "
          "pictures if each layer's cells held the share of the cell its region covers, aggregated "
          "the same way (benchmarks/results/grounding-ceiling.md searches for better cell patterns).", "",
          side_by_side(report["rows"]), "",
          f"`style` and `eyes` are shares of the {report['n']} pictures the judges read as captioned "
          f"(`attributes` the mean of such shares); a share has a standard error of at most "
          f"{0.5 / report['n'] ** 0.5:.3f} "
          "(a binomial's at one half), so two models whose shares differ by less than about twice "
          "that are within the draw of captions and noise, which another `--seed` redraws.", ""]
    (out / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=N_TRAIN,
                    help="how many training combinations the unseen captions avoid")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default="attention-grounding", help="file stem of the results (NAME.json, NAME.md)")
    ap.add_argument("--previous", action="append", default=[], metavar="JSON",
                    help="an earlier attention-grounding.json whose rows (same --n, --steps, "
                         "--guidance, --seed, --n-train) join the table without being measured again")
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    measured_with = {k: getattr(args, k) for k in MEASURED_WITH}
    earlier, commands = [], []  # the commands that measured the earlier rows, oldest first
    kept = {}  # the earlier models' detailed results, kept beside the new ones
    for path in args.previous:
        old = json.loads(Path(path).read_text())
        record = {"n_train": N_TRAIN} | old  # records older than the field were measured on the default
        measured = {k: record[k] for k in MEASURED_WITH}
        if measured != measured_with:
            raise SystemExit(f"{path} was measured with {as_flags(measured)}; give the same options or "
                             "measure its models again with --model")
        if old.get("protocol") != PROTOCOL:
            raise SystemExit(f"{path} was measured before DAAM's layer selection and normalisation; "
                             "measure its models again with --model")
        earlier += [r for r in old["rows"] if r["model"] not in models]
        kept |= {k: v for k, v in old.get("results", {}).items() if k not in models}
        commands += [c for c in old.get("commands", []) if c not in commands]
    combos = heldout_combinations(args.n, training_combinations(args.n_train), seed=args.seed)
    results = {name: measure(path, combos, args.steps, args.guidance, args.seed)
               for name, path in models.items()}
    table = earlier + rows(results)
    table = [{k: r.get(k, float("nan")) for k in table[-1]} for r in table]
    report = {"kind": "attention-grounding", "protocol": PROTOCOL, **measured_with,
              "machine": platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "rows": table, "previous": args.previous,
              "results": kept | {k: {**v, "grounding": {**v["grounding"], "per_image": v["grounding"]["per_image"][:20]},
                                     "quality": {k2: v2 for k2, v2 in v["quality"].items() if k2 != "per_image"}}
                                 for k, v in results.items()}}
    report["commands"] = [*commands, recorded_command(args, ap)]
    write_report(report, Path(args.out_dir), args.name)


if __name__ == "__main__":
    main()
