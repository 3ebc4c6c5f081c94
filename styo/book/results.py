"""The measured figures the book's appendix shows, read from ``benchmarks/results/``.

The appendix never re-measures: it reads what ``benchmarks/sd_scale.py`` and
``benchmarks/book_timing.py`` wrote, with their date, device and settings, so every number in the
book traces back to a committed file and the command that made it. Kept free of torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
BOOK_TIMING = "book-timing.json"
ABLATIONS = "ablations.json"
# Results of the other scripts in benchmarks/ (not sd_scale.py reports), by file-name prefix
# (fcc_probe.py --name fcc-probe-ns1 writes fcc-probe-ns1.json).
OTHER_RESULTS = ("book-timing", "ablations", "idl-tuning", "fcc-probe", "attention-grounding",
                 "grounding-ceiling", "recombination", "word-maps-on-renders", "gpu-candidates",
                 "decoder-detail", "texture-transfer-cost", "latent-side-cost")


def benchmark_runs(results_dir: str | Path = RESULTS, kind: str | None = None) -> list[dict[str, Any]]:
    """Every ``sd_scale.py`` report in ``results_dir`` (newest first), optionally of one ``kind``.

    ``kind`` is ``"sd15"`` (the real architecture at 512²) or ``"smoke"`` (a reduced model that
    only proves the script runs). Each report gets a ``"file"`` key naming where it came from.
    """
    runs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name.startswith(OTHER_RESULTS):
            continue
        report = json.loads(path.read_text())
        if "idl" not in report or "kind" not in report:
            raise ValueError(f"{path} is not a benchmarks/sd_scale.py report (no 'kind'/'idl' keys)")
        if kind is None or report["kind"] == kind:
            runs.append({**report, "file": path.name})
    return sorted(runs, key=lambda r: r.get("date", ""), reverse=True)


def book_timing(results_dir: str | Path = RESULTS) -> dict[str, Any] | None:
    """The latest ``book_timing.py`` measurement, or None when the book was never timed."""
    path = Path(results_dir) / BOOK_TIMING
    return json.loads(path.read_text()) if path.is_file() else None


def ablation_study(results_dir: str | Path = RESULTS, name: str | None = None) -> dict[str, Any] | None:
    """The latest ``benchmarks/ablations.py`` study (many pairs), or the one written with ``--name
    NAME``; None when there is none."""
    path = Path(results_dir) / (f"{name}.json" if name else ABLATIONS)
    return json.loads(path.read_text()) if path.is_file() else None


# The scores an ablation study reports, in the order its tables show them (a study may lack some).
STUDY_SCORES = ("content", "leak", "style", "geometry", "joint", "diversity")


def ablation_means_markdown(means: Sequence[dict[str, Any]]) -> str:
    """The table of an ablation study's means: one row per (variant, FCC), averaged over pairs."""
    rows = [{**m, "fcc": "on" if m["fcc"] else "off"} for m in means]
    scored = rows[0] if rows else {"content", "leak", "style", "diversity"}  # a study without rows
    scores = [k for k in STUDY_SCORES if k in scored]
    return markdown_table(rows, ["variant", "fcc", *scores, "n"], ["variant", "FCC", *scores, "pairs"],
                          decimals=3)


FULL_IDL = "contrastive + aux"  # the full IDL variant, the one the study's targets are read on
RECOMBINED_JOINT = 0.5  # a pair recombines when most of its pictures pass the joint score
RECOMBINED, FACE_LOST = "recombined", "styled without the source's face"
UNSTYLED, THIRD_STYLE = "left in the source's style", "drawn in a third style"
NOT_TARGET_STYLE = "not in the target style"  # where a study did not record which style the rest are in


def pair_outcomes(per_pair: Sequence[dict[str, Any]],
                  rows: Sequence[dict[str, Any]] = ()) -> dict[str, list[str]]:
    """What the full method made of each pair, by outcome: ``recombined`` (joint score ≥ 0.5: most
    pictures carry the target style and the source's face), ``styled without the source's face``
    (the target style read in half or more, but the target drawn whole, or the face or its place
    lost), else not in the target style. ``rows`` (the study's rows for the full method with FCC,
    which record the share of pictures read in the source's style and in a third one) split the
    last into ``left in the source's style`` and ``drawn in a third style``: a stylization that
    left the source's style without reaching the target's (the target's texture half drawn, read as
    another style) is not the same failure as one that did nothing. The way a pair fails says which
    half of IDL's split gave way."""
    styles = {r["pair"]: r for r in rows if "source_style" in r and "other_style" in r}
    split = bool(per_pair) and all(row["pair"] in styles for row in per_pair)
    kinds = [RECOMBINED, UNSTYLED, THIRD_STYLE, FACE_LOST] if split else [RECOMBINED, NOT_TARGET_STYLE, FACE_LOST]
    out: dict[str, list[str]] = {kind: [] for kind in kinds}
    for row in per_pair:
        if row["joint"] >= RECOMBINED_JOINT:
            kind = RECOMBINED
        elif row["style"] >= 0.5:
            kind = FACE_LOST
        elif not split:
            kind = NOT_TARGET_STYLE
        else:
            other = styles[row["pair"]]
            kind = THIRD_STYLE if other["other_style"] > other["source_style"] else UNSTYLED
        out[kind].append(row["pair"])
    return out


# The committed studies of one setting drawn with IDL's seeds 0 to 4 (``benchmarks/ablations.py
# --idl-seed N``): the paper's IDL and IDL with the painted target-side set (``--target-aux 16``),
# each sampled at the paper's n_s = 3 and at n_s = 1. Same pairs, same sampling seed; only IDL's
# noise, timesteps and auxiliary draws differ between the studies of a row.
IDL_DRAW_STUDIES: dict[str, tuple[str, ...]] = {
    "paper's IDL, n_s = 3": (
        "ablations", *(f"ablations-v3-seed{s}" for s in range(1, 5))),
    "paper's IDL, n_s = 1": (
        "ablations-v3-ns1", *(f"ablations-v3-seed{s}-ns1" for s in range(1, 5))),
    "painted set, n_s = 3": (
        "ablations-target-aux", *(f"ablations-target-aux-seed{s}" for s in range(1, 5))),
    "painted set, n_s = 1": (
        "ablations-target-aux-ns1", *(f"ablations-target-aux-seed{s}-ns1" for s in range(1, 5))),
}


# The control for the held-out styles: the same study with its targets in two pretraining styles
# (pixel art, watercolour), which the base model draws on any face, and its sources in the three
# others (``--target-styles pixel,watercolour --source-styles photo,sketch,cartoon``), IDL's seeds 0
# to 4, at both n_s. Read beside the paper's IDL rows of :data:`IDL_DRAW_STUDIES`.
KNOWN_STYLE_STUDIES: dict[str, tuple[str, ...]] = {
    "known styles, n_s = 3": (
        "ablations-known-styles", *(f"ablations-known-styles-seed{s}" for s in range(1, 5))),
    "known styles, n_s = 1": (
        "ablations-known-styles-ns1", *(f"ablations-known-styles-seed{s}-ns1" for s in range(1, 5))),
}


def full_method(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries (a study's ``rows`` or ``means``) of the full IDL variant sampled with FCC."""
    return [e for e in entries if e["variant"] == FULL_IDL and e["fcc"]]


def target_style(pair: str) -> str:
    """The target style in a study's pair label (``"pair 3 (cartoon → mosaic)"`` → ``"mosaic"``)."""
    return pair.rsplit(" ", 1)[-1].rstrip(")")


def idl_draws(settings: Mapping[str, Sequence[str]] = IDL_DRAW_STUDIES, fingerprint: str | None = None,
              results_dir: str | Path = RESULTS) -> list[dict[str, Any]]:
    """Per setting, the full method with FCC in each of its studies (one per IDL seed): the joint
    score by seed, its mean and spread, the target style and the source attributes kept by seed
    (``style_by_seed``, ``content_by_seed``), and how many pairs of each target style recombined
    (joint score ≥ 0.5, as :func:`pair_outcomes`). A study that is missing, or that measured
    another model than ``fingerprint``, is left out and named in ``skipped``: its numbers would not
    be this model's."""
    out = []
    for label, names in settings.items():
        joints, recombined, pairs, skipped = {}, {}, {}, []
        by_seed: dict[str, dict[int, float]] = {"style": {}, "content": {}}
        for name in names:
            study = ablation_study(results_dir, name)
            if study is None or (fingerprint is not None and study["model_fingerprint"] != fingerprint):
                skipped.append(name)
                continue
            seed = study["idl"].get("seed", 0)
            full = full_method(study["means"])[0]
            joints[seed] = full["joint"]
            for key, per_seed in by_seed.items():
                per_seed[seed] = full[key]
            for row in full_method(study["rows"]):
                style = target_style(row["pair"])
                pairs[style] = pairs.get(style, 0) + 1
                recombined[style] = recombined.get(style, 0) + (row["joint"] >= RECOMBINED_JOINT)
        values = list(joints.values())
        out.append({"setting": label, "joint_by_seed": joints, "skipped": skipped,
                    "mean": sum(values) / len(values) if values else None,
                    **{f"{key}_by_seed": per_seed for key, per_seed in by_seed.items()},
                    "spread": max(values) - min(values) if values else None,
                    "recombined": recombined, "pairs": pairs})
    return out


def paired_draws(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Two settings of :func:`idl_draws` compared seed by seed (only the seeds both measured): how
    often ``after`` scored the higher joint score, and the mean difference. With IDL's draw moving
    one setting by a tenth or more, only a difference that holds seed by seed says something."""
    seeds = sorted(set(before["joint_by_seed"]) & set(after["joint_by_seed"]))
    diffs = [after["joint_by_seed"][s] - before["joint_by_seed"][s] for s in seeds]
    return {"seeds": seeds, "higher": sum(d > 0 for d in diffs), "lower": sum(d < 0 for d in diffs),
            "mean_difference": sum(diffs) / len(diffs) if diffs else None}


def idl_draws_markdown(draws: Sequence[Mapping[str, Any]],
                       comparisons: Sequence[tuple[int, int]] = ((0, 1), (0, 2), (1, 3), (0, 3))) -> str:
    """:func:`idl_draws` as a table (the joint score by IDL seed, its mean and spread, the
    recombined pairs by target style), then each ``(before, after)`` pair of rows (their positions
    in ``draws``; by default, with :data:`IDL_DRAW_STUDIES`' order: n_s = 1 against the profile,
    the painted set against the profile, the painted set against the paper's IDL at n_s = 1 and
    against the profile) compared seed by seed (:func:`paired_draws`)."""
    seeds = sorted({s for d in draws for s in d["joint_by_seed"]})
    styles = sorted({s for d in draws for s in d["pairs"]})
    if not seeds:
        return "No study of IDL's draws was measured on this model: `benchmarks/ablations.py --idl-seed N` makes them."
    rows = [{"setting": d["setting"], **{f"seed {s}": d["joint_by_seed"].get(s) for s in seeds},
             "mean": d["mean"], "spread": d["spread"],
             **{style: f"{d['recombined'].get(style, 0)} of {d['pairs'][style]}" for style in styles
                if style in d["pairs"]}}
            for d in draws]
    columns = ["setting", *(f"seed {s}" for s in seeds), "mean", "spread", *styles]
    headers = ["setting", *(f"seed {s}" for s in seeds), "mean", "max − min",
               *(f"{style} pairs recombined" for style in styles)]
    lines = ["The full method with FCC, joint score by IDL's seed:", "",
             markdown_table(rows, columns, headers, decimals=2), ""]
    for before, after in comparisons:
        if max(before, after) >= len(draws):
            continue
        c = paired_draws(draws[before], draws[after])
        if not c["seeds"]:
            continue
        n = len(c["seeds"])
        lines.append(f"- *{draws[after]['setting']}* against *{draws[before]['setting']}*, seed by seed: "
                     f"higher in {c['higher']} of {n} draws, lower in {c['lower']}; mean difference "
                     f"{c['mean_difference']:+.2f}.")
    skipped = [name for d in draws for name in d["skipped"]]
    if skipped:
        lines.append(f"- Not read (missing, or measured on another model): {', '.join(skipped)}.")
    return "\n".join(lines)


def known_style_control(fingerprint: str | None = None, results_dir: str | Path = RESULTS
                        ) -> list[dict[str, Any]]:
    """:func:`idl_draws` for the paper's IDL on the study's held-out targets and on the control's
    targets in known styles (:data:`KNOWN_STYLE_STUDIES`), at n_s = 3 and n_s = 1, in that order:
    whether what stops the study is the style being new to the base model, or IDL's split."""
    held = {label.replace("paper's IDL", "held-out styles"): IDL_DRAW_STUDIES[label]
            for label in ("paper's IDL, n_s = 3", "paper's IDL, n_s = 1")}
    return idl_draws({**held, **KNOWN_STYLE_STUDIES}, fingerprint, results_dir)


def known_style_markdown(draws: Sequence[Mapping[str, Any]]) -> str:
    """:func:`known_style_control` as :func:`idl_draws_markdown`'s table, each n_s's control compared
    seed by seed with the held-out targets, then the mean target style and source attributes kept."""
    if len(draws) != 4:
        raise ValueError(f"known_style_markdown reads known_style_control's four settings, got {len(draws)}")
    lines = []
    for held, known in ((draws[0], draws[2]), (draws[1], draws[3])):
        seeds = sorted(set(held["style_by_seed"]) & set(known["style_by_seed"]))
        if not seeds:
            continue
        mean = {(which, key): sum(d[f"{key}_by_seed"][s] for s in seeds) / len(seeds)
                for which, d in (("held", held), ("known", known)) for key in ("style", "content")}
        n_s = known["setting"].rsplit(", ", 1)[-1]
        lines.append(f"- At {n_s}, mean over the {len(seeds)} draws both measured: the target style is read "
                     f"in {mean['known', 'style']:.2f} of the pictures with targets in known styles against "
                     f"{mean['held', 'style']:.2f} with held-out ones, and the source keeps "
                     f"{mean['known', 'content']:.2f} of its attributes against {mean['held', 'content']:.2f}.")
    control_joints = [(joint, d["setting"]) for d in draws[2:] for joint in d["joint_by_seed"].values()]
    if control_joints:
        best, setting = max(control_joints)
        lines.append(f"- The control's best draw scores a joint {best:.2f} ({setting.rsplit(', ', 1)[-1]}).")
    return "\n".join([idl_draws_markdown(draws, comparisons=((0, 2), (1, 3))), *lines])


def study_targets_markdown(targets: dict[str, Any], per_pair: bool = True,
                           rows: Sequence[dict[str, Any]] = ()) -> str:
    """An ablation study's targets for the full method with FCC: each mean against its target,
    whether FCC raised the geometry on most pairs, and (``per_pair``) the pair-by-pair table with
    each pair's outcome (:func:`pair_outcomes`, given the study's ``rows`` for the full method with
    FCC)."""
    means, lows, met = targets["means"], targets["targets"], targets["met"]
    lines = ["Targets for the full method with FCC (mean over pairs):", ""]
    lines += [f"- {m} {means[m]:.2f} (target ≥ {lows[m]}): **{'met' if met[m] else 'not met'}**" for m in lows]
    n = len(targets["per_pair"])
    lines.append(f"- geometry above sampling without FCC in {targets['fcc_geometry_wins']} of {n} pairs: "
                 f"**{'met' if met['geometry above no FCC on most pairs'] else 'not met'}**")
    if per_pair:
        lines += ["", "Pair by pair:", "",
                  markdown_table(targets["per_pair"], ["pair", *lows, "geometry without FCC"], decimals=2), ""]
        lines += [f"- {kind} ({len(pairs)} of {n}): {', '.join(pairs) if pairs else 'none'}"
                  for kind, pairs in pair_outcomes(targets["per_pair"], rows).items()]
    return "\n".join(lines)


def ideal_markdown(ideal: dict[str, Any]) -> str:
    """A study's scale: what a perfect stylization of its pairs scores (``experiments.ideal_rows``)."""
    means, rows = ideal["means"], ideal["per_pair"]
    lowest = min(rows, key=lambda r: r["joint"])
    every = lowest["joint"] == 1.0
    joint = (f"joint 1.00 on every one of the {len(rows)} pairs" if every else
             f"joint {means['joint']:.2f} over {len(rows)} pairs (the lowest {lowest['joint']:.2f}, {lowest['pair']})")
    return ("For scale, a perfect stylization (the renderer's drawing of each source's face in its target "
            f"style, with the source's layout, passed through the model's autoencoder) scores {joint}; "
            f"style {means['style']:.2f}, content {means['content']:.2f} and geometry {means['geometry']:.2f} "
            "on average: "
            + ("a lower joint score is the method's shortfall, not the scores'." if every else
               "a pair whose perfect stylization fails cannot count as recombined, however good the method."))


def _memory(profile: dict[str, Any]) -> float | None:
    """Peak memory of one IDL profile: GPU allocation on CUDA, the process's RSS on CPU."""
    return profile.get("peak_gpu_allocated_gib", profile.get("peak_rss_gib"))


def idl_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per IDL profile: step time, the paper's 400 steps, peak memory, or why not run."""
    rows = []
    for name, p in report["idl"].items():
        ok = p.get("status") == "ok"
        rows.append({
            "profile": name,
            "about": p.get("about", ""),
            "step_s": p.get("step_time_median_s") if ok else None,
            "400_steps_s": p.get("projected_400_steps_s") if ok else None,
            "end_to_end_s": p.get("projected_400_steps_end_to_end_s") if ok else None,
            "peak_gib": _memory(p) if ok else None,
            "status": "ok" if ok else f"{p.get('status')}: {p.get('reason', '')}".strip(": "),
        })
    return rows


def fcc_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One stylization per FCC variant (off / idle / on), with its time relative to ``off``."""
    fcc = report.get("fcc") or {}
    variants = fcc.get("variants", {})
    if "off" not in variants:
        return []
    off = variants["off"]["median_s"]
    return [{"variant": name, "median_s": v["median_s"], "ratio_to_off": v["median_s"] / off}
            for name, v in variants.items()]


def strengths_markdown(comparison: dict[str, Any]) -> str:
    """An ablation study's comparison of FCC from the profile's strength with FCC as the paper runs
    it (``benchmarks/ablations.py --paper-strength``): the means of the full variant with and
    without FCC at each strength, and the sentence that states which measures better."""
    rows = [{**m, "fcc": "on" if m["fcc"] else "off"} for m in comparison["means"]]
    scores = [k for k in STUDY_SCORES if k in rows[0]]
    n, wins = comparison["pairs"], comparison["fcc_geometry_wins"]
    better, profile = comparison["better"], comparison["profile"]
    on = {m["strength"]: m for m in comparison["means"] if m["fcc"]}
    verdict = (f"the profile's strength {float(profile)} measures better than the paper's {float(comparison['paper'])}"
               if better == profile else
               f"the paper's strength {float(better)} measures better than the profile's {float(profile)}")
    return "\n".join([
        f"FCC from the diffused source (strength {float(profile)}, the profile's) and as the paper runs it "
        f"(strength {float(comparison['paper'])}: both branches from the same noise), on the full variant's "
        f"runs of {n} pairs (mean over pairs):", "",
        markdown_table(rows, ["strength", "fcc", *scores], ["strength", "FCC", *scores], decimals=2), "",
        *(f"- strength {float(s)}: with FCC, joint {on[s]['joint']:.2f} and geometry {on[s]['geometry']:.2f}; "
          f"FCC raises the geometry in {wins[str(s)]} of {n} pairs" for s in on),
        f"- with FCC, **{verdict}** (the higher mean joint score, then the higher geometry).",
    ])


def strength_sweep_markdown(sweep: dict[str, Any]) -> str:
    """An ablation study's sweep of the source's diffusion depth (``benchmarks/ablations.py
    --strength-sweep``): the full method's means with and without FCC at each strength, and the
    range of the joint score with FCC across them."""
    rows = [{**m, "fcc": "on" if m["fcc"] else "off"} for m in sweep["means"]]
    scores = [k for k in STUDY_SCORES if k in rows[0]]
    joint = {m["strength"]: m["joint"] for m in sweep["means"] if m["fcc"]}
    return "\n".join([
        f"The full method from several depths of the diffused source (strength {float(sweep['profile'])} "
        f"is the profile's), on the full variant's runs of {sweep['pairs']} pairs (mean over pairs):", "",
        markdown_table(rows, ["strength", "fcc", *scores], ["strength", "FCC", *scores], decimals=2), "",
        "- with FCC, the joint score by strength: "
        + ", ".join(f"{float(s)}: {joint[s]:.2f}" for s in sorted(joint))
        + f" (from {min(joint.values()):.2f} to {max(joint.values()):.2f}).",
    ])


def _extension_markdown(comparison: dict[str, Any], extension: str, wins: list[str]) -> str:
    """An ablation study's extension beside FCC (``benchmarks/ablations.py``'s ``compare_controls``):
    what ``extension`` adds to FCC, the three controls' means, then one line per control of ``wins``."""
    rows, n = comparison["means"], comparison["pairs"]
    scores = [k for k in STUDY_SCORES if k in rows[0]]
    return "\n".join([
        f"An extension, not the paper's method: FCC plus {extension}, at the profile's strength, on the "
        f"full variant's runs of {n} pairs (mean over pairs):", "",
        markdown_table(rows, ["control", *scores], decimals=2), "", *wins,
    ])


def self_attention_markdown(comparison: dict[str, Any]) -> str:
    """An ablation study's extension row (``benchmarks/ablations.py --self-attention F``): the full
    method without FCC, with FCC, and with FCC plus the reconstruction's self-attention maps over
    the first ``F`` of the steps, as prompt-to-prompt injects them; how often each raises the
    geometry above sampling without FCC."""
    n = comparison["pairs"]
    return _extension_markdown(
        comparison,
        f"the reconstruction's self-attention maps over the first {comparison['fraction']:.0%} of the steps "
        "(the stylization's queries and keys replaced by the reconstruction's, its values its own)",
        [f"- {name} raises the geometry above sampling without FCC in {k} of {n} pairs"
         for name, k in comparison["geometry_wins"].items()])


def content_encodings_markdown(comparison: dict[str, Any]) -> str:
    """An ablation study's extension row (``benchmarks/ablations.py --content-encodings``): the
    full method without FCC, with FCC, and with FCC plus the reconstruction's text encodings of the
    content words; how often each raises the content and the geometry above sampling without FCC."""
    n = comparison["pairs"]
    return _extension_markdown(
        comparison,
        "the reconstruction's text encodings of the content words (what they say, their keys and values, "
        "as well as where they act, their maps)",
        [f"- {name} raises the content above sampling without FCC in {comparison['content_wins'][name]} "
         f"of {n} pairs, the geometry in {wins}" for name, wins in comparison["geometry_wins"].items()])


# Crossing the identifiers (styo.book.crossing): the four effects of one run, and how they read.
EFFECTS = ("style_by_style_ids", "face_by_content_ids", "style_by_content_ids", "face_by_style_ids")
# An identifier pair "carries" a factor when swapping it moves that factor's score by this much.
CARRIES = 0.5


def carriers(effects: Mapping[str, float]) -> dict[str, str]:
    """Which identifiers carry the style and which the face: ``style identifiers``, ``content
    identifiers`` (the one whose swap moves that factor more, by at least :data:`CARRIES`), or
    ``neither``. The split IDL wants is the style by the style identifiers, the face by the content
    identifiers."""
    out = {}
    for factor in ("style", "face"):
        by = {"style identifiers": effects[f"{factor}_by_style_ids"],
              "content identifiers": effects[f"{factor}_by_content_ids"]}
        best = max(by, key=by.get)
        out[factor] = best if by[best] >= CARRIES else "neither"
    return out


def crossing_summary(effects: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """Per variant: the mean of each effect over the pairs, and how many pairs have each carrier
    of the style and of the face. ``effects`` is ``{variant: {pair: effects}}``."""
    out = {}
    for variant, by_pair in effects.items():
        n = len(by_pair)
        means = {k: sum(e[k] for e in by_pair.values()) / n for k in EFFECTS}
        counts: dict[str, dict[str, int]] = {"style": {}, "face": {}}
        for e in by_pair.values():
            for factor, who in carriers(e).items():
                counts[factor][who] = counts[factor].get(who, 0) + 1
        out[variant] = {"pairs": n, "means": means, "carriers": counts}
    return out


def crossing_markdown(effects: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A table of the mean effects per variant and a sentence per variant saying, in how many
    pairs, which identifiers carry the face (computed, like every verdict in the book)."""
    summary = crossing_summary(effects)
    lines = ["| variant | style by style ids | face by content ids | style by content ids "
             "| face by style ids | pairs |", "|---|---|---|---|---|---|"]
    for variant, s in summary.items():
        m = s["means"]
        lines.append(f"| {variant} | " + " | ".join(f"{m[k]:+.2f}" for k in EFFECTS)
                     + f" | {s['pairs']} |")
    lines.append("")
    for variant, s in summary.items():
        face, style = s["carriers"]["face"], s["carriers"]["style"]
        lines.append(
            f"- {variant}: the face is carried by the content identifiers in "
            f"{face.get('content identifiers', 0)} of {s['pairs']} pairs, by the style identifiers "
            f"in {face.get('style identifiers', 0)}, by neither in {face.get('neither', 0)}; the "
            f"style by the style identifiers in {style.get('style identifiers', 0)}."
        )
    return "\n".join(lines)


def crossing_study_markdown(record: dict[str, Any]) -> str:
    """An ablation study's identifier crossing (``benchmarks/ablations.py --crossing``): for each
    variant, how much the style and the content identifiers each move the style and the face, and
    which carries the face in how many pairs (:mod:`styo.book.crossing`)."""
    crossing = record["crossing"]
    return "\n".join([
        f"Which identifier carries what: every run drawn from pure noise with its style and content "
        f"identifiers crossed ({crossing['images']} pictures per prompt, the same noise for all four, no FCC). "
        f"*Style by X ids* is the target style's probability with the target's X identifiers minus "
        f"with the source's; *face by X ids* the share of the source's attributes with the source's "
        f"X identifiers minus with the target's (each averaged over the other identifiers, then over "
        f"the pairs). The split IDL means gives +1.00 in the first two columns and 0 in the last "
        f"two:", "",
        crossing_markdown(crossing["effects"]),
    ])


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    headers: Sequence[str] | None = None,
    digits: int = 3,
    decimals: int | None = None,
) -> str:
    """A Markdown table of ``rows`` (``headers`` default to the column keys); floats rounded to
    ``digits`` significant digits, or to ``decimals`` places when given (scores in [0, 1] read
    better so), missing values shown as an en dash."""
    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float) and decimals is not None:
            return f"{value:.{decimals}f}"
        if isinstance(value, float):
            return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
        return str(value).replace("|", "\\|")

    if headers is not None and len(headers) != len(columns):
        raise ValueError(f"{len(headers)} headers for {len(columns)} columns")
    lines = ["| " + " | ".join(headers or columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# The appendix's views. matplotlib and IPython are imported when a view is drawn, so that the
# timing script and the browser check can import this module without them.


def show_book_timing(timing: dict[str, Any] | None) -> None:
    """The measured time of every chapter (table and bars) against the book's budget, or how to
    measure it: the claim "each chapter runs on two CPU cores in minutes" needs its evidence."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    if not timing:
        display(Markdown("The book has not been timed yet: run `python benchmarks/book_timing.py`."))
        return
    rows = [{"chapter": c["chapter"].removeprefix("book/").removesuffix(".ipynb"), "seconds": c["seconds"]}
            for c in timing["chapters"]]
    total, budget = timing["total_seconds"], timing["budget_seconds"]
    speed = timing.get("reference_step_ms")
    speed = (f" Machine speed: {speed['before']} ms per reference step before, {speed['after']} ms after "
             "(one IDL-shaped step of the miniature UNet; this shared 2-core machine has measured 95 to 325 ms on different days and loads)."
             if speed else "")
    display(Markdown(f"Measured {timing['date']} on {timing['machine']}, {timing['cache']} cache.{speed} "
                     f"{timing.get('note', '')}\n\n"
                     + markdown_table(rows + [{"chapter": "**total**", "seconds": total}],
                                      ["chapter", "seconds"])))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    ax.barh([r["chapter"] for r in rows][::-1], [r["seconds"] / 60 for r in rows][::-1], color="tab:blue")
    ax.set(xlabel="minutes", title=f"book execution: {total / 60:.1f} min in all, budget {budget / 60:.0f} min")
    fig.tight_layout()
    plt.show()
    verdict = "within" if total <= budget else "**over**"
    display(Markdown(f"The whole book took {total / 60:.1f} min: {verdict} the {budget / 60:.0f}-minute budget."))


def run_summary(run: dict[str, Any]) -> str:
    """One line on where and how a ``sd_scale.py`` report was measured: a time means nothing
    without the machine, the versions and the settings that made it."""
    dev, v, s = run["device"], run["versions"], run["settings"]
    where = f"`{run['file']}`: " if "file" in run else ""
    idl = (f", IDL batch 3 (source, target, aux), {s['idl_steps']} timed steps per profile"
           if run.get("idl") else "")
    params = ", ".join(f"{k} {n / 1e6:.1f} M" for k, n in run.get("params", {}).items())
    return (f"{where}{dev['name']} ({dev['type']}), {run['date'][:10]}, torch {v['torch']}, "
            f"diffusers {v['diffusers']}, image {s['image_size']}²{idl}"
            + (f"; parameters: {params}" if params else "") + ".")


def run_markdown(run: dict[str, Any], title: bool = True) -> str:
    """The whole report of one ``sd_scale.py`` run as Markdown: the note on what was measured,
    the IDL profiles, the FCC variants and the targets. The script writes it beside its JSON and
    the appendix shows it, so the two can never disagree."""
    dev = run["device"]
    parts = [f"# StyO benchmark: {dev['name']} ({dev['type']}), scale `{run['kind']}`"] if title else []
    parts += [run_summary(run), f"> **{run['note']}**"]
    argv = run["settings"].get("argv")
    if argv is not None:
        parts.append(f"Command: `python benchmarks/sd_scale.py {' '.join(argv)}`")
    idl = idl_rows(run)
    if idl:
        memory = "GPU allocated" if dev["type"] == "cuda" else "process RSS"
        parts += ["## IDL", markdown_table(
            idl, ["profile", "step_s", "400_steps_s", "end_to_end_s", "peak_gib", "status"],
            ["profile", "median step, s", "400 steps, s", "400 steps + set-up and save, s",
             f"peak memory ({memory}), GiB", "status"])]
    fcc = fcc_rows(run)
    if fcc:
        f = run["fcc"]
        parts += [f"## FCC: one stylization, {f['num_inference_steps']} DDIM steps at strength "
                  f"{f['strength']} ({f['denoising_steps_run']} run), guidance {f['guidance_scale']}, "
                  f"{f['dtype']}, median of {f['repeats']}",
                  markdown_table(fcc, ["variant", "median_s", "ratio_to_off"],
                                 ["variant", "median, s", "ratio to off"], decimals=3)]
    targets = [{**t, "threshold": f"≤ {t['threshold']}",
                "status": t["status"] + (f" ({t['note']})" if t.get("note") else "")}
               for t in run["targets"]]
    parts += ["## Targets", markdown_table(targets, ["target", "threshold", "value", "where", "status"])]
    return "\n\n".join(parts) + "\n"


def show_run(run: dict[str, Any]) -> None:
    """One ``benchmarks/sd_scale.py`` report as the script wrote it (:func:`run_markdown`), with
    a chart of the IDL profiles' time and memory when it timed any."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    display(Markdown(run_markdown(run, title=False).replace("## ", "#### ")))
    ok = [r for r in idl_rows(run) if r["step_s"] is not None]
    if not ok:
        return
    dev = run["device"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(ok) + 1.4), sharey=True)
    names = [r["profile"] for r in ok][::-1]
    axes[0].barh(names, [r["400_steps_s"] for r in ok][::-1], color="tab:orange")
    axes[0].set(xlabel="seconds for 400 IDL steps")
    axes[1].barh(names, [r["peak_gib"] for r in ok][::-1], color="tab:green")
    axes[1].set(xlabel="peak memory, GiB" + (" (GPU allocated)" if dev["type"] == "cuda" else " (process RSS)"))
    fig.suptitle(f"IDL profiles, {dev['name']}", fontsize=10)
    fig.tight_layout()
    plt.show()
