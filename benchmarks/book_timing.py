"""How long the book takes to execute, chapter by chapter, with its full (default) parameters.

The whole book has a budget of 20 minutes on 2 CPU cores. `make book` executes every chapter of
_toc.yml through Jupyter Book; this script executes the same notebooks the same way (papermill,
the ``styo`` kernel, each in its own folder, one shared cache so that chapters reuse their shared
IDL run as they do in a build) and records each one's wall time, so the budget can be checked
chapter by chapter, in the reading order of _toc.yml.

    .venv/bin/python benchmarks/book_timing.py                   # every chapter, reading order
    .venv/bin/python benchmarks/book_timing.py book/fcc.ipynb    # some chapters
    .venv/bin/python benchmarks/book_timing.py --set book/ablations.ipynb:idl_steps=200

Writes benchmarks/results/book-timing.{json,md} (or --out-dir). The cache starts empty (a fresh
temporary folder) unless --cache is given, as in a first `make book`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


BUDGET_S = 20 * 60


def _parse_sets(items: list[str]) -> dict[str, dict]:
    """``book/x.ipynb:name=value`` (value is JSON, else a string) → {notebook: {name: value}}."""
    out: dict[str, dict] = {}
    for item in items:
        path, _, assignment = item.partition(":")
        name, eq, raw = assignment.partition("=")
        if not eq or not name:
            raise SystemExit(f"--set {item!r}: expected NOTEBOOK:NAME=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(path, {})[name] = value
    return out


def reference_step_ms(repeats: int = 12) -> float:
    """The machine's speed at the book's main workload: one IDL-shaped training step (miniature
    UNet, batch 3, AdamW), median milliseconds, random weights with a fixed seed.

    The same 2-core machine has been measured at 95, 172 and 325 ms for this step (on different days,
    the slow ones an hour apart: a shared VM), so a book time means little without the speed it was
    measured at.
    """
    import statistics

    import torch

    from styo.world.architecture import TEXT_DIM, build_unet

    torch.manual_seed(0)
    unet = build_unet()
    z, emb = torch.randn(3, 4, 16, 16), torch.randn(3, 77, TEXT_DIM)
    t = torch.tensor([10, 500, 990])
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        loss = (unet(z, t, encoder_hidden_states=emb).sample - z).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:  # the first steps pay for allocation and kernel selection
            times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 1)


def write_results(record: dict, out: Path) -> None:
    """book-timing.json (the record) and book-timing.md (a table for the book's appendix)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "book-timing.json").write_text(json.dumps(record, indent=1) + "\n")
    total = record["total_seconds"]
    lines = [
        "# Book execution time", "",
        f"`benchmarks/book_timing.py`, {record['date']}, {record['machine']}, {record['cache']} cache.", "",
        *([f"Machine speed (`reference_step_ms`, one IDL-shaped step of the miniature UNet): "
           f"{record['reference_step_ms']['before']} ms before, {record['reference_step_ms']['after']} ms after.", ""]
          if record.get("reference_step_ms") else []),
        *([record["note"], ""] if record.get("note") else []),
        "| chapter | seconds | overrides |", "| --- | --- | --- |",
        *[f"| {r['chapter']} | {r['seconds']:.0f} | {r['overrides'] or ''} |" for r in record["chapters"]],
        f"| **total** | **{total:.0f}** ({total / 60:.1f} min; budget {record['budget_seconds'] // 60} min) | |",
    ]
    (out / "book-timing.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("chapters", nargs="*", help="notebooks to run (default: every chapter)")
    ap.add_argument("--set", action="append", default=[], metavar="NB:NAME=VALUE",
                    help="override a parameter of one chapter (repeatable)")
    ap.add_argument("--cache", help="STYO_CACHE to use (default: a fresh temporary folder)")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--note", default="", help="a line saying what was measured (e.g. which model)")
    args = ap.parse_args()

    import papermill
    import torch

    from styo.book import toc

    chapters = args.chapters or toc.notebooks(ROOT / "_toc.yml")  # the reading order
    missing = [c for c in chapters if not (ROOT / c).exists()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    overrides = _parse_sets(args.set)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="styo-book-cache-"))
    os.environ["STYO_CACHE"] = str(cache)  # the kernels inherit it
    executed = Path(tempfile.mkdtemp(prefix="styo-book-run-"))
    speed_before = reference_step_ms()
    print(f"machine speed: {speed_before} ms per reference step", flush=True)
    rows = []
    for path in chapters:
        start = time.perf_counter()
        papermill.execute_notebook(
            str(ROOT / path), str(executed / Path(path).name), parameters=overrides.get(path, {}),
            kernel_name="styo", cwd=str((ROOT / path).parent), progress_bar=False,
        )
        rows.append({"chapter": path, "seconds": round(time.perf_counter() - start, 1),
                     "overrides": overrides.get(path, {})})
        print(f"{path:32s} {rows[-1]['seconds']:7.1f} s", flush=True)
    total = sum(r["seconds"] for r in rows)
    record = {
        "chapters": rows, "total_seconds": round(total, 1), "budget_seconds": BUDGET_S,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"), "cache": "given" if args.cache else "fresh", "note": args.note,
        "reference_step_ms": {"before": speed_before, "after": reference_step_ms()},
    }
    write_results(record, Path(args.out_dir))
    print(f"total {total:.0f} s ({total / 60:.1f} min) of a {BUDGET_S // 60}-min budget")


if __name__ == "__main__":
    main()
