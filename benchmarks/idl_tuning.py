"""Which IDL schedule does the miniature model need? Steps × learning rate, measured by the judges.

The paper's 400 steps at lr 1e-6 suit Stable Diffusion; the miniature model needs about 1e-4
(docs/design.md §3), and the book's time budget would like fewer steps. This script trains IDL on
(source, target) pairs of the miniature world under several (steps, lr) schedules, stylizes each
result the way the book does (FCC on, the augmented prompt n_s = 3, n_c = 1), and scores the images
with the judges: content fidelity, the target's content leaking in, and the target style. It also
times each run, so a shorter schedule is chosen only where its quality holds.

    .venv/bin/python benchmarks/idl_tuning.py                           # 400:1e-4,200:2e-4,150:3e-4,100:4e-4
    .venv/bin/python benchmarks/idl_tuning.py --schedules 400:1e-4,200:2e-4 --pairs 3
    .venv/bin/python benchmarks/idl_tuning.py --model /tmp/snapshot --note "EMA of step 1700"
    .venv/bin/python benchmarks/idl_tuning.py --schedules 400:1e-4:unet,400:1e-4:te   # text encoder off/on

A schedule may end in ``:te`` (IDL trains the text encoder too) or ``:unet`` (the UNet only); without
it, the profile's choice. Every run starts from the base weights and uses the book's settings
otherwise (aux set, seed, sampling). Writes benchmarks/results/idl-tuning.{json,md} (or --out-dir).
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

import numpy as np
import torch

from styo.book import auxiliary_set, bench_pipeline
from styo.book import experiments as X
from styo.book.results import markdown_table
from styo.idl import train
from styo.prompts import source_prompt, target_prompt

METRICS = ("content", "leak", "style", "other_style")
# What IDL itself learned, before FCC: the target's prompt drawn in the target style, the source's
# prompt drawn with the source's content (text-to-image from noise, n_images seeds).
DIAGNOSTICS = ("target_prompt_style", "source_prompt_content")


TRAINED = {"te": True, "unet": False}


def parse_schedules(text: str) -> list[tuple[int, float, bool | None]]:
    """``"400:1e-4,200:2e-4:te"`` → [(400, 1e-4, None), (200, 2e-4, True)]: (steps, lr, whether the
    text encoder is trained; None = the profile's). Malformed input is a clear error."""
    out = []
    for item in text.split(","):
        fields = item.strip().split(":")
        try:
            parsed = (int(fields[0]), float(fields[1]), TRAINED[fields[2]] if len(fields) == 3 else None)
        except (ValueError, IndexError, KeyError):
            parsed = None
        if parsed is None or len(fields) > 3 or parsed[0] < 1 or not parsed[1] > 0:
            raise SystemExit(f"--schedules: {item!r} is not STEPS:LR[:te|:unet] with STEPS >= 1 and LR > 0")
        out.append(parsed)
    return out


def tune(pipe, pairs: dict, aux: list, schedules, settings, judges, work: Path,
         n_images: int, seed: int) -> list[dict]:
    """One row per (schedule, pair): training seconds, final loss and the judges' scores."""
    base = X.snapshot_weights(pipe)
    rows = []
    for steps, lr, te in schedules:
        config = replace(settings.idl, steps=steps, lr=lr, checkpoint_every=0,
                         train_text_encoder=settings.idl.train_text_encoder if te is None else te)
        trained = "te" if config.train_text_encoder else "unet"
        for label, pair in pairs.items():
            X.restore_weights(pipe, base)
            start = time.perf_counter()
            run = train(pipe, pair.source, pair.target, aux, config,
                        output_dir=work / f"{steps}-{lr:g}-{len(rows)}", progress=True)
            seconds = time.perf_counter() - start
            (row,) = X.stylize_rows(pipe, pair, [{"fcc": True}], judges=judges, progress=False,
                                    n_s=3, n_c=1, strength=settings.strength, seed=seed, num_images=n_images,
                                    num_inference_steps=settings.sample_steps,
                                    guidance_scale=settings.guidance)
            learned = diagnose(pipe, pair, judges, settings, n_images, seed)
            tail = run.losses[-max(1, steps // 10):]
            rows.append({"steps": steps, "lr": lr, "trained": trained, "pair": label, "train_s": round(seconds, 1),
                         "idl_loss": float(np.mean(tail)), **{m: row[m] for m in METRICS}, **learned})
            print(f"{steps}:{lr:g}:{trained} {label}: {seconds:.0f} s, "
                  + ", ".join(f"{m} {rows[-1][m]:.2f}" for m in (*METRICS, *DIAGNOSTICS)), flush=True)
    X.restore_weights(pipe, base)
    return rows


@torch.no_grad()
def diagnose(pipe, pair, judges, settings, n_images: int, seed: int) -> dict[str, float]:
    """IDL's own result, FCC aside: does each training prompt redraw its picture's style/content?"""
    def draw(prompt):
        gens = [torch.Generator().manual_seed(seed + k) for k in range(n_images)]
        return pipe([prompt] * n_images, generator=gens, num_inference_steps=settings.sample_steps,
                    guidance_scale=settings.guidance).images

    target = X.score(judges, draw(target_prompt()), target_style=pair.target_style)
    source = X.score(judges, draw(source_prompt()), source_attributes=pair.source_attributes)
    return {"target_prompt_style": target["style"], "source_prompt_content": source["content"]}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over pairs per schedule."""
    out = []
    for key in dict.fromkeys((r["steps"], r["lr"], r["trained"]) for r in rows):
        mine = [r for r in rows if (r["steps"], r["lr"], r["trained"]) == key]
        out.append({"steps": key[0], "lr": key[1], "trained": key[2], "pairs": len(mine),
                     **{m: float(np.mean([r[m] for r in mine])) for m in ("train_s", *METRICS, *DIAGNOSTICS)}})
    return out


def with_lr_text(rows: list[dict]) -> list[dict]:
    """Rows with the learning rate as text (1e-04 would round to 0.00 among the scores)."""
    return [{**r, "lr": f"{r['lr']:g}"} for r in rows]


def write_results(record: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "idl-tuning.json").write_text(json.dumps(record, indent=1) + "\n")
    cols = ("train_s", *METRICS, *DIAGNOSTICS)
    lines = ["# IDL schedule on the miniature model", "",
             f"`benchmarks/idl_tuning.py`, {record['date']}, {record['machine']}, model `{record['model']}`, "
             f"{record['n_images']} images per stylization, FCC on, n_s = 3, n_c = 1, strength {record.get('strength', 0.8)}. "
             "`trained`: `te` when IDL trains the text encoder as well as the UNet, `unet` for the UNet only. "
             "`target_prompt_style`: the judged probability of the target style in images drawn from "
             "the target's training prompt; `source_prompt_content`: content fidelity of images drawn "
             "from the source's (both from noise, no FCC: what IDL itself learned).", "",
             *([record["note"], ""] if record.get("note") else []),
             "Mean over pairs:", "",
             markdown_table(with_lr_text(record["summary"]), ["steps", "lr", "trained", "pairs", *cols], decimals=2),
             "", "Per pair:", "",
             markdown_table(with_lr_text(record["rows"]), ["steps", "lr", "trained", "pair", "idl_loss", *cols],
                            decimals=3)]
    (out / "idl-tuning.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="pipeline folder (default: the shipped miniature model); "
                    "'tiny' is the random test pipeline")
    ap.add_argument("--schedules", default="400:1e-4,200:2e-4,150:3e-4,100:4e-4", help="STEPS:LR,...")
    ap.add_argument("--pairs", type=int, default=2, help="(source, target) pairs, the book's first")
    ap.add_argument("--n-images", type=int, default=4, help="images per stylization")
    ap.add_argument("--aux", type=int, help="auxiliary portraits (default: the book's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    schedules = parse_schedules(args.schedules)
    if args.pairs < 1 or args.n_images < 1:
        raise SystemExit("--pairs and --n-images must be positive")

    settings, pipe = bench_pipeline(args.model)
    backend = settings.name
    from styo.world.judges import load_judges

    judges = load_judges()
    # photo sources, as in the paper and in the results this probe recorded
    pairs = X.ablation_pairs(backend, X.ablation_seeds(args.pairs), source_styles=["photo"])
    with tempfile.TemporaryDirectory(prefix="styo-idl-tuning-") as tmp:
        os.environ["STYO_CACHE"] = tmp  # the book's aux set, generated into a throwaway cache
        aux = auxiliary_set(pipe, settings, n=args.aux)
        rows = tune(pipe, pairs, aux, schedules, settings, judges, Path(tmp), args.n_images, args.seed)
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": args.model or "models/styo-mini",
        "n_images": args.n_images,
        "strength": settings.strength,
        "note": args.note,
        "summary": summarise(rows),
        "rows": rows,
    }
    write_results(record, Path(args.out_dir))
    print(f"wrote {Path(args.out_dir) / 'idl-tuning'}.json and .md")


if __name__ == "__main__":
    main()
