"""Rank the candidates of `gpu_session.sh continue` by what issue 17 asks of a base model.

    python benchmarks/gpu_candidates.py WORK NAME [NAME ...]

Reads ``WORK/eval/<name>/grounding/grounding.json`` (`styo world grounding`) and
``WORK/eval/<name>/quality/metrics.json`` (`styo world evaluate`), prints one row per candidate
and, last, the names of the two best on one line: those meeting more of the quality targets
first, then the higher eyes word map, then the higher mean. A candidate with a measurement missing
ranks last.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

QUALITY_TARGETS = {"style": 0.95, "attributes": 0.85, "eyes attribute": 0.60}


def figures(work: Path, name: str) -> dict[str, float] | None:
    """The candidate's figures, or None when a measurement is missing."""
    try:
        g = json.loads((work / "eval" / name / "grounding" / "grounding.json").read_text())
        q = json.loads((work / "eval" / name / "quality" / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return {"eyes map": g["miou_per_target"].get("eyes", float("nan")), "mean map": g["miou"],
            "lowest map": g["min_target_miou"], "style": q["style_accuracy"],
            "attributes": q["mean_attribute_accuracy"], "eyes attribute": q["attribute_accuracy"]["eyes"]}


def rank_key(f: dict[str, float] | None) -> tuple:
    if f is None:
        return (-1, 0.0, 0.0)
    met = sum(f[k] >= v for k, v in QUALITY_TARGETS.items())
    return (met, f["eyes map"], f["mean map"])


def main(argv: list[str]) -> None:
    work, names = Path(argv[0]), argv[1:]
    found = {n: figures(work, n) for n in names}
    columns = ("eyes map", "mean map", "lowest map", "style", "attributes", "eyes attribute")
    print("candidate " + " ".join(columns))
    for n, f in found.items():
        print(n, " ".join("-" if f is None else f"{f[c]:.3f}" for c in columns))
    print(" ".join(sorted(names, key=lambda n: rank_key(found[n]), reverse=True)[:2]))


if __name__ == "__main__":
    main(sys.argv[1:])
