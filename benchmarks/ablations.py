"""The ablation chapter's measurement over more pairs than the book has time for.

Chapter 9 trains every IDL variant on a few (source, target) pairs while the book builds, within
its time budget; a few pairs make noisy verdicts. This script runs the same measurement
(`styo.book.experiments.ablation_rows`: each variant trained on each pair, sampled with and without
FCC, scored by the judges) over many pairs, with the book's settings, and records the rows, the
means and the verdict on each of the paper's claims. The chapter shows the result beside its own.

    .venv/bin/python benchmarks/ablations.py                  # 8 pairs, the book's settings
    .venv/bin/python benchmarks/ablations.py --pairs 12 --cache runs/ablation-cache

Every IDL run goes through the book's cache (`--cache`, default `runs/ablation-cache`), so a
killed study resumes where it stopped, and a run the book already made is loaded. Writes
benchmarks/results/ablations.{json,md} (or --out-dir) with the fingerprint of the model measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("content", "leak", "style", "diversity")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="pipeline folder (default: the shipped miniature model); 'tiny' for tests")
    ap.add_argument("--pairs", type=int, default=8, help="(source, target) pairs, the book's first")
    ap.add_argument("--idl-steps", type=int, help="IDL steps (default: the book's)")
    ap.add_argument("--n-images", type=int, default=4, help="images per (pair, variant, FCC)")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "ablation-cache"), help="STYO_CACHE for the runs")
    ap.add_argument("--note", default="")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.pairs < 2 or args.n_images < 2:
        raise SystemExit("--pairs and --n-images must be at least 2 (diversity needs two images)")
    os.environ["STYO_CACHE"] = args.cache  # read by styo.book.cache_root at each call

    from styo.book import auxiliary_set, bench_pipeline, with_steps
    from styo.book import experiments as X
    from styo.data import model_fingerprint
    from styo.world.judges import load_judges

    settings, pipe = bench_pipeline(args.model)
    backend = settings.name
    fingerprint = model_fingerprint(pipe)
    config = settings.idl if args.idl_steps is None else with_steps(settings.idl, args.idl_steps)
    aux = auxiliary_set(pipe, settings)
    pairs = X.ablation_pairs(backend, X.ablation_seeds(args.pairs))
    start = time.perf_counter()
    rows = X.ablation_rows(pipe, pairs, aux, config, judges=load_judges(), n_s=3, n_c=1, strength=settings.strength,
                           seed=0, num_images=args.n_images, num_inference_steps=settings.sample_steps,
                           guidance_scale=settings.guidance)
    for r in rows:
        for key in ("images", "reconstruction", "reconstructions"):
            r.pop(key, None)
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "model": args.model or "models/styo-mini",
        "model_fingerprint": fingerprint,
        "idl": {"steps": config.steps, "lr": config.lr, "aux": len(aux)},
        "n_images": args.n_images,
        "stylization": {"n_s": 3, "n_c": 1, "strength": settings.strength},
        "pairs": list(pairs),
        "seconds": round(time.perf_counter() - start, 1),
        "note": args.note,
        "rows": rows,
        "means": X.mean_rows(rows, ["variant", "fcc"], COLUMNS),
        "claims": X.check_ablation_claims(rows),
    }
    write_results(record, Path(args.out_dir))
    print(X.claims_markdown(record["claims"]))
    print(f"wrote {Path(args.out_dir) / 'ablations'}.json and .md")


def write_results(record: dict, out: Path) -> None:
    from styo.book.experiments import claims_markdown
    from styo.book.results import ablation_means_markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        "# Ablations over many pairs", "",
        f"`benchmarks/ablations.py`, {record['date']}, {record['machine']}, model `{record['model']}`, "
        f"{len(record['pairs'])} pairs, IDL {record['idl']['steps']} steps at lr {record['idl']['lr']:g} "
        f"with {record['idl']['aux']} auxiliary portraits, {record['n_images']} images per setting, "
        f"{record['seconds'] / 60:.0f} min.", "",
        *([record["note"], ""] if record.get("note") else []),
        ablation_means_markdown(record["means"]),
        "", claims_markdown(record["claims"]),
    ]
    (out / "ablations.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
