"""benchmarks/gpu_candidates.py ranks the lent GPU's candidates as issue 17's targets read."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import benchmark_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_candidates.py"
gpu_candidates = benchmark_script("gpu_candidates")


def _candidate(work: Path, name: str, eyes_map: float, mean: float, style: float, eyes_attr: float) -> None:
    (work / "eval" / name / "grounding").mkdir(parents=True)
    (work / "eval" / name / "quality").mkdir(parents=True)
    (work / "eval" / name / "grounding" / "grounding.json").write_text(json.dumps(
        {"miou_per_target": {"eyes": eyes_map, "hair": 0.8}, "miou": mean, "min_target_miou": eyes_map}))
    (work / "eval" / name / "quality" / "metrics.json").write_text(json.dumps(
        {"style_accuracy": style, "mean_attribute_accuracy": 0.86, "attribute_accuracy": {"eyes": eyes_attr}}))


def test_quality_targets_come_first_then_the_eyes_map_and_a_missing_measurement_last(tmp_path):
    _candidate(tmp_path, "sharp_but_unstyled", eyes_map=0.50, mean=0.70, style=0.90, eyes_attr=0.70)
    _candidate(tmp_path, "good", eyes_map=0.38, mean=0.66, style=0.96, eyes_attr=0.62)
    _candidate(tmp_path, "better", eyes_map=0.39, mean=0.64, style=0.96, eyes_attr=0.61)
    (tmp_path / "eval" / "broken" / "quality").mkdir(parents=True)  # its grounding never finished
    names = ["broken", "sharp_but_unstyled", "good", "better"]
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), *names], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[-1] == "better good"
    assert out[0].startswith("candidate eyes map") and len(out) == len(names) + 2
    assert "broken - - -" in out[1]
    assert gpu_candidates.figures(tmp_path, "broken") is None
    assert gpu_candidates.rank_key(None) < gpu_candidates.rank_key(gpu_candidates.figures(tmp_path, "good"))
