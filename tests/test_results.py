"""The appendix's reader of benchmark results (styo.book.results)."""

import json

import pytest

from styo.book import results as R


def _report(kind: str, date: str, device_type: str = "cuda") -> dict:
    mem = {"peak_gpu_allocated_gib": 9.5, "peak_rss_gib": 3.0} if device_type == "cuda" else {"peak_rss_gib": 0.5}
    return {
        "kind": kind, "date": date, "device": {"type": device_type, "name": "X"},
        "idl": {
            "fast": {"status": "ok", "step_time_median_s": 0.05, "projected_400_steps_s": 20.0,
                     "projected_400_steps_end_to_end_s": 25.0, **mem},
            "big": {"status": "oom", "reason": "CUDA out of memory"},
        },
        "fcc": {"variants": {"off": {"median_s": 2.0}, "idle": {"median_s": 2.02}, "on": {"median_s": 2.1}}},
        "targets": [],
    }


def _write(folder, name, report):
    (folder / name).write_text(json.dumps(report))


def test_runs_are_filtered_by_kind_and_sorted_newest_first(tmp_path):
    _write(tmp_path, "a-sd15.json", _report("sd15", "2026-01-01T00:00:00"))
    _write(tmp_path, "b-sd15.json", _report("sd15", "2026-03-01T00:00:00"))
    _write(tmp_path, "cpu-smoke.json", _report("smoke", "2026-02-01T00:00:00", "cpu"))
    _write(tmp_path, R.BOOK_TIMING, {"chapters": [], "total_seconds": 1.0})
    _write(tmp_path, R.ABLATIONS, {"pairs": ["p"]})
    sd15 = R.benchmark_runs(tmp_path, kind="sd15")
    assert [r["file"] for r in sd15] == ["b-sd15.json", "a-sd15.json"]
    assert [r["file"] for r in R.benchmark_runs(tmp_path, kind="smoke")] == ["cpu-smoke.json"]
    assert len(R.benchmark_runs(tmp_path)) == 3  # the other scripts' results are not sd_scale reports
    assert R.book_timing(tmp_path)["total_seconds"] == 1.0
    assert R.ablation_study(tmp_path)["pairs"] == ["p"]
    _write(tmp_path, "ablations-other.json", {"pairs": ["q"]})  # a study written with --name
    assert R.ablation_study(tmp_path, "ablations-other")["pairs"] == ["q"]
    assert R.ablation_study(tmp_path)["pairs"] == ["p"] and R.ablation_study(tmp_path, "ablations-none") is None


def test_a_foreign_json_file_is_named_in_the_error(tmp_path):
    _write(tmp_path, "notes.json", {"hello": 1})
    with pytest.raises(ValueError, match="notes.json"):
        R.benchmark_runs(tmp_path)


def test_missing_results_are_none(tmp_path):
    assert R.book_timing(tmp_path) is None and R.ablation_study(tmp_path) is None


def test_idl_rows_report_gpu_memory_on_cuda_and_why_a_profile_did_not_run():
    fast, big = R.idl_rows(_report("sd15", "d"))
    assert fast["peak_gib"] == 9.5  # GPU allocation, not the process RSS
    assert (fast["step_s"], fast["400_steps_s"], fast["status"]) == (0.05, 20.0, "ok")
    assert big["step_s"] is None and big["peak_gib"] is None
    assert big["status"] == "oom: CUDA out of memory"
    assert R.idl_rows(_report("smoke", "d", "cpu"))[0]["peak_gib"] == 0.5


def test_fcc_rows_are_relative_to_control_off():
    rows = {r["variant"]: r for r in R.fcc_rows(_report("sd15", "d"))}
    assert rows["off"]["ratio_to_off"] == 1.0
    assert rows["on"]["ratio_to_off"] == pytest.approx(1.05)
    assert R.fcc_rows({"idl": {}}) == []


def test_markdown_table_formats_cells_and_checks_headers():
    table = R.markdown_table([{"a": 0.123456, "b": None}, {"a": 12345.6, "b": "x|y"}], ["a", "b"], ["A", "B"])
    lines = table.splitlines()
    assert lines[0] == "| A | B |" and len(lines) == 4
    assert lines[2] == "| 0.123 | – |"
    assert lines[3] == "| 12346 | x\\|y |"
    assert R.markdown_table([{"a": 6.65e-05, "b": 1}], ["a", "b"], decimals=2).splitlines()[2] == "| 0.00 | 1 |"
    with pytest.raises(ValueError, match="headers"):
        R.markdown_table([], ["a", "b"], ["A"])


def test_the_committed_results_are_readable():
    """Every file the appendix reads parses, and each profile has a row with a figure or a reason."""
    runs = R.benchmark_runs()
    assert runs, "benchmarks/results holds at least the CPU smoke run"
    for run in runs:
        for row in R.idl_rows(run):
            assert (row["step_s"] is not None) == (row["status"] == "ok"), row
    timing = R.book_timing()
    assert timing is not None
    assert sum(c["seconds"] for c in timing["chapters"]) == pytest.approx(timing["total_seconds"], abs=1)


def test_ablation_means_table_names_fcc_on_and_off():
    means = [{"variant": "contrastive", "fcc": True, "content": 0.5, "leak": 0.1, "style": 0.9, "diversity": 0.02, "n": 3},
             {"variant": "contrastive", "fcc": False, "content": 0.4, "leak": 0.2, "style": 0.8, "diversity": 0.05, "n": 3}]
    lines = R.ablation_means_markdown(means).splitlines()
    assert lines[0] == "| variant | FCC | content | leak | style | diversity | pairs |"
    assert lines[2] == "| contrastive | on | 0.500 | 0.100 | 0.900 | 0.020 | 3 |"
    assert lines[3].startswith("| contrastive | off |")
    joint = [{**m, "geometry": 0.7, "joint": 0.4} for m in means]  # scored with the segmentation judge
    assert R.ablation_means_markdown(joint).splitlines()[0] == (
        "| variant | FCC | content | leak | style | geometry | joint | diversity | pairs |")


def _study(seed: int, joints: dict[str, float], fingerprint: str = "f0", style: float = 0.5,
           content: float = 0.5) -> dict:
    """A minimal benchmarks/ablations.py record: the full method with FCC on each pair, plus one
    row of another variant that the draws must ignore."""
    rows = [{"pair": pair, "variant": R.FULL_IDL, "fcc": True, "joint": j} for pair, j in joints.items()]
    rows.append({"pair": "pair 1 (photo → mosaic)", "variant": "contrastive", "fcc": True, "joint": 1.0})
    mean = sum(joints.values()) / len(joints)
    return {"model_fingerprint": fingerprint, "idl": {"seed": seed}, "rows": rows,
            "means": [{"variant": R.FULL_IDL, "fcc": False, "joint": 0.0},
                      {"variant": R.FULL_IDL, "fcc": True, "joint": mean, "style": style, "content": content}]}


def test_idl_draws_read_each_seed_and_count_recombined_pairs_by_target_style(tmp_path):
    m, h = "pair 1 (photo → mosaic)", "pair 2 (sketch → halftone)"
    _write(tmp_path, "a0.json", _study(0, {m: 0.0, h: 0.5}))
    _write(tmp_path, "a1.json", _study(1, {m: 0.25, h: 1.0}))
    _write(tmp_path, "b0.json", _study(0, {m: 0.75, h: 0.75}))
    _write(tmp_path, "b1.json", _study(1, {m: 0.0, h: 0.0}))
    _write(tmp_path, "b2.json", _study(2, {m: 1.0, h: 1.0}, fingerprint="another model"))
    draws = R.idl_draws({"A": ("a0", "a1"), "B": ("b0", "b1", "b2", "missing")}, fingerprint="f0",
                        results_dir=tmp_path)
    a, b = draws
    assert a["joint_by_seed"] == {0: 0.25, 1: 0.625}
    assert a["mean"] == pytest.approx(0.4375) and a["spread"] == pytest.approx(0.375)
    assert a["recombined"] == {"mosaic": 0, "halftone": 2} and a["pairs"] == {"mosaic": 2, "halftone": 2}
    assert b["joint_by_seed"] == {0: 0.75, 1: 0.0} and b["skipped"] == ["b2", "missing"]
    assert b["recombined"] == {"mosaic": 1, "halftone": 1}
    c = R.paired_draws(a, b)
    assert c["seeds"] == [0, 1] and (c["higher"], c["lower"]) == (1, 1)
    assert c["mean_difference"] == pytest.approx((0.5 - 0.625) / 2)
    text = R.idl_draws_markdown(draws, comparisons=((0, 1),))
    assert "| A | 0.25 | 0.62 | 0.44 | 0.38 | 2 of 2 | 0 of 2 |" in text
    assert "*B* against *A*, seed by seed: higher in 1 of 2 draws, lower in 1; mean difference -0.06." in text
    assert "b2, missing" in text
    assert "No study" in R.idl_draws_markdown(R.idl_draws({"A": ("a0",)}, "nobody", tmp_path))


def test_the_known_style_control_sits_beside_the_held_out_targets_seed_by_seed(tmp_path):
    held, known = "pair 1 (photo → mosaic)", "pair 1 (photo → pixel)"
    names = {"held-3": R.IDL_DRAW_STUDIES["paper's IDL, n_s = 3"], "held-1": R.IDL_DRAW_STUDIES["paper's IDL, n_s = 1"],
             "known-3": R.KNOWN_STYLE_STUDIES["known styles, n_s = 3"],
             "known-1": R.KNOWN_STYLE_STUDIES["known styles, n_s = 1"]}
    for seed in range(3):  # the held-out targets with three seeds, the control with two
        _write(tmp_path, f"{names['held-3'][seed]}.json", _study(seed, {held: 0.0}, style=0.6, content=0.4))
        _write(tmp_path, f"{names['held-1'][seed]}.json", _study(seed, {held: 0.5}, style=0.4, content=0.8))
    for seed in range(2):
        _write(tmp_path, f"{names['known-3'][seed]}.json", _study(seed, {known: 0.0}, style=0.9, content=0.3))
        _write(tmp_path, f"{names['known-1'][seed]}.json", _study(seed, {known: 1.0}, style=0.8 + 0.1 * seed,
                                                                   content=0.7))
    draws = R.known_style_control("f0", tmp_path)
    assert [d["setting"] for d in draws] == ["held-out styles, n_s = 3", "held-out styles, n_s = 1",
                                             "known styles, n_s = 3", "known styles, n_s = 1"]
    text = R.known_style_markdown(draws)
    assert "| known styles, n_s = 1 | 1.00 | 1.00 | – | 1.00 | 0.00 | – | 2 of 2 |" in text
    assert "| held-out styles, n_s = 3 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0 of 3 | – |" in text
    assert "*known styles, n_s = 1* against *held-out styles, n_s = 1*, seed by seed: higher in 2 of 2" in text
    assert ("- At n_s = 1, mean over the 2 draws both measured: the target style is read in 0.85 of the "
            "pictures with targets in known styles against 0.40 with held-out ones, and the source keeps "
            "0.70 of its attributes against 0.80.") in text
    assert text.endswith("- The control's best draw scores a joint 1.00 (n_s = 1).")
    with pytest.raises(ValueError, match="four settings"):
        R.known_style_markdown(draws[:2])


def test_the_committed_known_style_control_is_the_studys_setting_with_other_target_styles():
    """Each study of KNOWN_STYLE_STUDIES measured the shipped model with its own IDL seed, its row's
    n_s, targets in pretraining styles only and sources in the others, the held-out study's IDL
    and sampling otherwise."""
    from styo.world.attributes import PRETRAIN_STYLES

    profile = R.ablation_study()
    draws = R.known_style_control(profile["model_fingerprint"])
    assert all(not d["skipped"] for d in draws), [d["skipped"] for d in draws]
    assert all(sorted(d["joint_by_seed"]) == [0, 1, 2, 3, 4] for d in draws)
    for label, names in R.KNOWN_STYLE_STUDIES.items():
        studies = [R.ablation_study(name=name) for name in names]
        assert [s["idl"]["seed"] for s in studies] == [0, 1, 2, 3, 4], label
        assert [s["stylization"]["n_s"] for s in studies] == [1 if label.endswith("n_s = 1") else 3] * 5, label
        for study in studies:
            styles = [pair.removesuffix(")").split(" (")[1].split(" → ") for pair in study["pairs"]]
            assert all(target in PRETRAIN_STYLES and source != target for source, target in styles)
            assert {t for _, t in styles} == set(study["pair_styles"]["target_styles"])
            assert (study["idl"]["steps"], study["idl"]["lr"], study["stylization"]["strength"],
                    study["stylization"]["guidance"], len(study["pairs"])) == (
                profile["idl"]["steps"], profile["idl"]["lr"], profile["stylization"]["strength"],
                profile["stylization"]["guidance"], len(profile["pairs"]))


def test_the_committed_draws_are_each_settings_five_seeds_on_the_shipped_model():
    """Each row of IDL_DRAW_STUDIES is one setting: every study measured the model of the main
    study, with its own IDL seed, the row's n_s and painted set, and nothing else changed."""
    fingerprint = R.ablation_study()["model_fingerprint"]
    draws = R.idl_draws(fingerprint=fingerprint)
    assert all(not d["skipped"] for d in draws), [d["skipped"] for d in draws]
    assert all(sorted(d["joint_by_seed"]) == [0, 1, 2, 3, 4] for d in draws)
    for label, names in R.IDL_DRAW_STUDIES.items():
        studies = [R.ablation_study(name=name) for name in names]
        n_s = 1 if label.endswith("n_s = 1") else 3
        assert [s["stylization"]["n_s"] for s in studies] == [n_s] * 5, label
        assert {bool(s["idl"].get("target_aux")) for s in studies} == {label.startswith("painted")}, label
        assert len({(s["idl"]["steps"], s["idl"]["lr"], s["stylization"]["strength"],
                     s["stylization"]["guidance"], tuple(s["pairs"])) for s in studies}) == 1, label
