"""Does the stylization prompt recombine the source's face with the target's style on this model?

StyO's stylization prompt, `a drawing with [S_tgt] not [S_src] style of [C_src] not [C_tgt]
portrait`, is a combination IDL never trained: the target's style identifiers with the source's
content identifiers. It works only if the fine-tuned model reads the two phrases apart. This
script trains IDL once per (pair, training variant) and samples the stylization over a grid of
the sampler's knobs (strength, guidance, n_s; FCC on), scored by the judges, so that a failure of
the recombination can be told from a setting that was merely too weak:

- the picture keeps the source (high ``content``, high ``source_style``): the content phrase won;
- the picture is the target (high ``style`` *and* high ``leak``, low ``geometry``): the style
  phrase won and brought the target's face with it;
- ``joint`` counts only the pictures that do both halves (the paper's claim).

Training variants (``--variants``; each trains the UNet as well):

- ``te``: the text encoder too (the miniature profile's default), at ``--steps``;
- ``unet``: the UNet alone (the paper's setting for Stable Diffusion);
- ``embeddings``: of the text encoder, only the identifiers' token embeddings (DreamBooth with
  textual inversion), the rest of it frozen so the prompt's order is read as in pretraining;
  ``embeddings-x50`` the same with the embeddings at 50 times the learning rate, as textual
  inversion trains them;
- ``grounded``: as ``te``, plus pretraining's grounding loss (TokenCompose's token and pixel
  terms, ``--grounding-weight``) on the content words of the source and target prompts: ``[C_src]``
  and ``portrait`` to the source's head, ``[C_tgt]`` and ``portrait`` to the target's, the heads
  read by the segmentation judge. FCC copies those words' maps; this asks whether maps that carry
  each picture's head let the stylization recombine.

    .venv/bin/python benchmarks/recombination.py --model runs/g4/out --name recombination-v4

Each variant's runs go through its own cache folder (``--cache``/<variant>), so a rerun samples
again without training. Writes benchmarks/results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("te", "unet", "embeddings", "embeddings-x50", "grounded")
SCORES = ("content", "leak", "style", "source_style", "other_style", "geometry", "joint")
# Where [C_src] attends after IDL, on the source prompt's own pictures: its heat's share on the
# judged head, against the head's share of the picture (chance).
MAPS = ("c_src_on_head", "head_area")
# Which training prompt the stylization prompt's last word reads like after IDL: the cosine of the
# text encoding of its `portrait` with that of the source prompt's and of the target prompt's.
ENCODINGS = ("portrait_cos_source", "portrait_cos_target")


@torch.no_grad()
def portrait_encodings(pipe, config, n_s: int) -> dict:
    """Cosine between the encoding of ``portrait`` in the stylization prompt (``n_s`` repeats)
    and in the source and target prompts. A causal text encoder writes everything before a word
    into it; the stylization prompt shares its style phrase with the target prompt and its
    content phrase with the source prompt, so this says which of the two it reads like."""
    from styo.attention import word_indices
    from styo.prompts import source_prompt, stylization_prompt, target_prompt

    prompts = {"source": source_prompt(config.ids), "target": target_prompt(config.ids),
               "stylization": stylization_prompt(config.ids, n_s=n_s)}
    ids = pipe.tokenizer(list(prompts.values()), padding="max_length",
                         max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    states = pipe.text_encoder(ids.to(pipe.text_encoder.device))[0].float().cpu()
    last = [word_indices(pipe.tokenizer, p, ["portrait"])["portrait"][-1] for p in prompts.values()]
    vec = {name: states[i, last[i]] for i, name in enumerate(prompts)}
    cos = torch.nn.functional.cosine_similarity
    return {"portrait_cos_source": round(float(cos(vec["stylization"], vec["source"], dim=0)), 3),
            "portrait_cos_target": round(float(cos(vec["stylization"], vec["target"], dim=0)), 3)}


def content_identifier_maps(pipe, config, segmenter, steps: int, guidance: float, seeds: int = 4) -> dict:
    """Mean over ``seeds`` pictures of the source prompt: share of ``[C_src]``'s heat on the head
    and the head's share of the picture (:func:`styo.world.evaluate.where_words_land`); nothing
    for pictures of another size than the miniature world's, whose masks would not match."""
    from styo.idl import prompts_for
    from styo.pipeline import image_size
    from styo.world.evaluate import where_words_land
    from styo.world.render import SIZE

    if image_size(pipe) != SIZE:
        return {}

    word = config.ids.c_src
    found = [where_words_land(pipe, segmenter, prompts_for(config)["source"], [word], seed=s,
                              steps=steps, guidance=guidance)["words"][word]["head"] for s in range(seeds)]
    return {"c_src_on_head": round(sum(f["share"] for f in found) / seeds, 3),
            "head_area": round(sum(f["region_share"] for f in found) / seeds, 3)}


@contextmanager
def identifier_embeddings_only(pipe, lr_multiplier: float):
    """IDL trains the UNet and, of the text encoder, only the identifiers' rows of the token
    embedding (the other rows get zero gradient); those rows at ``lr_multiplier`` × the rate.

    Done by wrapping :mod:`styo.finetune`'s two set-up functions for the duration, so the IDL loop
    itself is the library's, unchanged.
    """
    from styo import finetune
    from styo.prompts import Identifiers

    ids = Identifiers()
    rows = sorted({t for word in (ids.s_src, ids.s_tgt, ids.c_src, ids.c_tgt)
                   for t in pipe.tokenizer(word, add_special_tokens=False).input_ids})
    prepare, optimizer_class = finetune.prepare_modules, finetune.optimizer_class
    hooks = []

    def prepare_embeddings(pipe_, config, device):
        trained = prepare(pipe_, config, device)
        text_encoder = trained["text_encoder"]
        text_encoder.requires_grad_(False)
        weight = text_encoder.get_input_embeddings().weight
        weight.requires_grad_(True)
        keep = torch.zeros(weight.shape[0], 1)
        keep[rows] = 1.0
        hooks.append(weight.register_hook(lambda grad: grad * keep.to(grad)))
        return trained

    def grouped_optimizer(config, device):
        cls, kwargs = optimizer_class(config, device)
        vocab = len(pipe.tokenizer)

        def make(params, lr, **kw):
            emb = [p for p in params if p.dim() == 2 and p.shape[0] == vocab]
            rest = [p for p in params if all(p is not e for e in emb)]
            return cls([{"params": emb, "lr": lr * lr_multiplier}, {"params": rest}], lr=lr, **kw)

        return make, kwargs

    finetune.prepare_modules, finetune.optimizer_class = prepare_embeddings, grouped_optimizer
    try:
        yield rows
    finally:
        finetune.prepare_modules, finetune.optimizer_class = prepare, optimizer_class
        for hook in hooks:
            hook.remove()


@contextmanager
def grounded_content_words(pipe, config, segmenter, source, target, weight: float):
    """IDL adds ``weight`` × the grounding loss of the content words' maps to its loss: in the
    source's prompt ``[C_src]`` and ``portrait`` to the source's head, in the target's ``[C_tgt]``
    and ``portrait`` to the target's head (the auxiliary terms are left as they are).

    Done by wrapping :func:`styo.idl.idl_loss` and giving the UNet recording processors for the
    duration; both are restored afterwards, so the IDL loop itself is the library's. At weight 0
    nothing is wrapped: the recording processors compute attention without SDPA, which differs
    from it in the last bits.
    """
    if weight == 0:
        yield {}
        return
    from styo import idl
    from styo.attention import word_indices
    from styo.world import grounding

    prompts = idl.prompts_for(config)
    head = grounding.TARGETS.index("head")
    side = pipe.unet.config.sample_size
    regions = torch.from_numpy(segmenter.regions([source, target]))
    coverage = grounding.target_coverage(regions, side)  # (2, targets, side, side)
    words = {0: (prompts["source"], config.ids.c_src), 1: (prompts["target"], config.ids.c_tgt)}
    tokens = {term: [i for idx in word_indices(pipe.tokenizer, prompt, [content, "portrait"]).values()
                     for i in idx] for term, (prompt, content) in words.items()}
    processors = dict(pipe.unet.attn_processors)
    store = grounding.install(pipe.unet)
    plain_loss = idl.idl_loss

    index: dict = {}  # built once per batch layout, not at every step

    def grounding_index(batch: int, n_terms: int, device):
        """(rows, tokens, regions, per-row coverage) of the grounded words for a batch of terms."""
        key = (batch, n_terms, str(device))
        if key not in index:
            b = batch // n_terms
            rows, toks = [], []
            for term, idx in tokens.items():
                for r in range(term * b, (term + 1) * b):
                    rows += [r] * len(idx)
                    toks += idx
            per_row = torch.zeros(batch, *coverage.shape[1:])
            per_row[:b], per_row[b:2 * b] = coverage[0], coverage[1]
            as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
            index[key] = (as_long(rows), as_long(toks), as_long([head] * len(rows)), per_row.to(device))
        return index[key]

    def loss_with_grounding(unet, scheduler, z0, t, noise, embeds, n_terms):
        store.clear()
        terms = plain_loss(unet, scheduler, z0, t, noise, embeds, n_terms)
        maps = grounding.word_maps(store, side)
        loss = grounding.grounding_loss(maps, *grounding_index(z0.shape[0], n_terms, z0.device))
        store.clear()
        return terms + weight * loss / n_terms

    idl.idl_loss = loss_with_grounding
    try:
        yield tokens
    finally:
        idl.idl_loss = plain_loss
        pipe.unet.set_attn_processor(processors)


def training_context(variant: str, pipe, config, segmenter, pair, grounding_weight: float):
    """The context IDL trains in for ``variant`` (nothing for the library's own)."""
    if variant.startswith("embeddings"):
        return identifier_embeddings_only(pipe, 50.0 if variant == "embeddings-x50" else 1.0)
    if variant == "grounded":
        return grounded_content_words(pipe, config, segmenter, pair.source, pair.target, grounding_weight)
    return nullcontext()


def sweep(pipe, settings, pairs, config, variant: str, grid: list[dict], judges, segmenter,
          n_images: int, cache: Path, grounding_weight: float = 0.3) -> list[dict]:
    """IDL per pair with ``variant``'s training, then the stylization at every grid setting."""
    from styo.book import auxiliary_set, cached_idl
    from styo.book import experiments as X

    folder = f"{variant}-{grounding_weight:g}" if variant == "grounded" else variant
    os.environ["STYO_CACHE"] = str(cache / folder)  # the variants share a config, not a cache
    aux = auxiliary_set(pipe, settings)
    config = replace(config, train_text_encoder=variant != "unet")
    rows = []
    for label, pair in pairs.items():
        with X.base_weights(pipe):
            with training_context(variant, pipe, config, segmenter, pair, grounding_weight):
                cached_idl(pipe, pair.source, pair.target, aux, config, progress=False)
            maps = content_identifier_maps(pipe, config, segmenter, settings.sample_steps,
                                           max(g["guidance_scale"] for g in grid))
            encodings = {n_s: portrait_encodings(pipe, config, n_s) for n_s in {g["n_s"] for g in grid}}
            for row in X.stylize_rows(pipe, pair, grid, judges=judges, segmenter=segmenter, progress=False,
                                      n_c=1, seed=0, num_images=n_images,
                                      num_inference_steps=settings.sample_steps):
                rows.append({"variant": variant, "pair": label,
                             **{k: row[k] for k in ("strength", "guidance_scale", "n_s")},
                             **{k: round(row[k], 3) for k in SCORES}, **maps, **encodings[row["n_s"]]})
                print(rows[-1], flush=True)
    return rows


def outcome(row: dict) -> str:
    """What a setting's pictures are, in one word: a stylization, the source back, the target
    copied, or neither."""
    if row["joint"] >= 0.5:
        return "stylization"
    if row["style"] >= 0.5 and row["leak"] >= 0.5:
        return "target"
    if row["content"] >= 0.7 and row["style"] < 0.5:
        return "source" if row["source_style"] >= 0.5 else "source, other style"
    return "neither"


def write_results(record: dict, out: Path, name: str) -> None:
    from styo.book import experiments as X
    from styo.book.results import markdown_table

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    rows = [{**r, "outcome": outcome(r)} for r in record["rows"]]
    maps = [m for m in (*MAPS, *ENCODINGS) if all(m in r for r in rows)]  # older results lack them
    means = X.mean_rows(rows, ["variant", "strength", "guidance_scale", "n_s"], (*SCORES, *maps))
    counts = {}
    for r in rows:
        counts.setdefault(r["variant"], {}).setdefault(r["outcome"], 0)
        counts[r["variant"]][r["outcome"]] += 1
    kinds = ("stylization", "source", "source, other style", "target", "neither")
    legends = {
        "c_src_on_head": f"`c_src_on_head`: share of `{record.get('c_src', '[C_src]')}`'s heat (every layer "
                         "and step) on the judged head in the source prompt's own pictures after IDL (4 seeds, "
                         "the grid's highest guidance); `head_area`: the head's share of those pictures, what a "
                         "map spread evenly would put there.",
        "portrait_cos_source": "`portrait_cos_source` / `portrait_cos_target`: cosine between the text encoding "
                               "of the stylization prompt's `portrait` and the source / target prompt's, after "
                               "IDL (which training prompt it reads like)."}
    summary = [{"variant": v, **{k: c.get(k, 0) for k in kinds}} for v, c in counts.items()]
    lines = ["# Does the stylization prompt recombine source and target?", "",
             f"`benchmarks/recombination.py`, {record['date']}, {record['machine']}, model `{record['model']}`, "
             f"{len(record['pairs'])} pairs ({', '.join(record['pairs'])}), IDL {record['idl']['steps']} steps "
             f"at lr {record['idl']['lr']:g}, {record['n_images']} images per setting, FCC on, n_c = 1.", "",
             *([record["note"], ""] if record.get("note") else []),
             "What each (pair, setting) produced (`stylization`: joint ≥ 0.5; `target`: style and leak "
             "≥ 0.5; `source`: content ≥ 0.7 without the target style, in the source's style or another):", "",
             markdown_table(summary, ["variant", *kinds], decimals=0), "",
             "Mean over pairs:", "",
             markdown_table(means, ["variant", "strength", "guidance_scale", "n_s", *SCORES, *maps], decimals=2), "",
             *([" ".join(text for column, text in legends.items() if column in maps), ""] if maps else []),
             "Per pair:", "",
             markdown_table(rows, ["variant", "pair", "strength", "guidance_scale", "n_s", *SCORES, *maps, "outcome"],
                            decimals=2)]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="pipeline folder (default: the shipped miniature model); 'tiny' for tests")
    ap.add_argument("--pairs", type=int, default=3, help="(source, target) pairs, the book's first")
    ap.add_argument("--variants", default="te,unet,embeddings,embeddings-x50")
    ap.add_argument("--steps", type=int, help="IDL steps (default: the profile's)")
    ap.add_argument("--lr", type=float, help="IDL learning rate (default: the profile's)")
    ap.add_argument("--grounding-weight", type=float, default=0.3,
                    help="weight of the content words' grounding loss (variant 'grounded')")
    ap.add_argument("--strengths", default="0.7,1.0")
    ap.add_argument("--guidance", default="5,7.5,10")
    ap.add_argument("--n-s", default="3")
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "recombination-cache"))
    ap.add_argument("--note", default="")
    ap.add_argument("--name", default="recombination")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    try:
        grid = [{"strength": float(s), "guidance_scale": float(g), "n_s": int(n)}
                for s in args.strengths.split(",") for g in args.guidance.split(",")
                for n in args.n_s.split(",")]
    except ValueError:
        raise SystemExit("--strengths, --guidance and --n-s are comma-separated numbers") from None

    from styo.book import bench_pipeline, with_steps
    from styo.book import experiments as X
    from styo.world.judges import load_judges
    from styo.world.segmenter import load_segmenter

    settings, pipe = bench_pipeline(args.model)
    config = settings.idl if args.steps is None else with_steps(settings.idl, args.steps)
    config = config if args.lr is None else replace(config, lr=args.lr)
    # photo sources, as in the paper and in the results this probe recorded
    pairs = X.ablation_pairs(settings.name, X.ablation_seeds(args.pairs), source_styles=["photo"])
    judges, segmenter = load_judges(), load_segmenter()
    start = time.perf_counter()
    rows = [r for v in variants for r in sweep(pipe, settings, pairs, config, v, grid, judges, segmenter,
                                               args.n_images, Path(args.cache), args.grounding_weight)]
    record = {"date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "model": args.model or "models/styo-mini", "pairs": list(pairs), "n_images": args.n_images,
              "idl": {"steps": config.steps, "lr": config.lr}, "grid": grid, "note": args.note,
              "c_src": config.ids.c_src,
              **({"grounding_weight": args.grounding_weight} if "grounded" in variants else {}),
              "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    write_results(record, Path(args.out_dir), args.name)
    print(f"wrote {Path(args.out_dir) / args.name}.json and .md")


if __name__ == "__main__":
    main()
