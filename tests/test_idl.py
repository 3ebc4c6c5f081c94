"""IDL fine-tuning on the tiny random pipeline (CPU, a few seconds per run)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file

from styo.idl import IDLConfig, TrainingInterrupted, evaluate, prompts_for, train
from styo.prompts import Identifiers, aux_prompt, source_prompt, target_prompt
from styo.testing import TINY_IMAGE_SIZE, tiny_pipeline


@pytest.fixture(scope="module")
def images():
    """Smooth random pictures (source, target, two aux): something a tiny VAE can encode."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(4):
        small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), Image.BILINEAR)
        out.append(img)
    return out[0], out[1], out[2:]


def _unet_state(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def test_prompts_and_config_options():
    ids = Identifiers()
    base = prompts_for(IDLConfig())
    assert base == {
        "source": source_prompt(ids),
        "target": target_prompt(ids),
        "aux": aux_prompt(ids),
    }
    positive = prompts_for(IDLConfig(negative=False))
    assert all(" not " not in p for p in positive.values())
    assert positive["source"] == "a drawing with ak47 style of sks portrait"
    assert set(prompts_for(IDLConfig(use_aux=False))) == {"source", "target"}
    augmented = prompts_for(IDLConfig(train_n_s=3, train_n_c=2))
    assert augmented["source"].count("ak47 not aug") == 3
    assert augmented["target"].count("m4a1 not sks") == 2
    assert augmented["aux"] == base["aux"]
    for bad in (
        dict(steps=0),
        dict(train_n_s=6),
        dict(mixed_precision="fp8"),
        dict(lr=0.0),
        dict(lora_rank=0),
        dict(lora_rank=4, train_text_encoder=True),
        dict(aux_weight=-1.0),
        dict(aux_weight=float("nan")),
    ):
        with pytest.raises(ValueError):
            IDLConfig(**bad)


def test_idl_lowers_loss_and_saves_a_loadable_pipeline(images, tmp_path):
    source, target, aux = images
    pipe = tiny_pipeline(0)
    config = IDLConfig(steps=30, lr=1e-3, checkpoint_every=10)
    before = evaluate(pipe, source, target, aux, config)
    result = train(pipe, source, target, aux, config, output_dir=tmp_path, progress=False)
    after = evaluate(pipe, source, target, aux, config)
    assert after["total"] < 0.7 * before["total"], (before, after)
    assert all(after[k] < before[k] for k in ("source", "target", "aux"))
    assert len(result.losses) == 30 and set(result.term_losses) == {"source", "target", "aux"}
    assert np.allclose(result.losses, np.sum(list(result.term_losses.values()), axis=0), atol=1e-5)

    record = json.loads(result.losses_path.read_text())
    assert record["losses"] == result.losses and record["prompts"] == result.prompts
    assert [p.name for p in sorted(result.checkpoint_dir.iterdir())] == ["step-000030"]
    loaded = StableDiffusionPipeline.from_pretrained(result.pipeline_dir, use_safetensors=True)
    trained = pipe.unet.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in loaded.unet.state_dict().items())
    assert not any(p.requires_grad for p in pipe.unet.parameters()) and not pipe.unet.training

    with pytest.raises(FileExistsError, match="finished IDL run"):
        train(tiny_pipeline(0), source, target, aux, config, output_dir=tmp_path, progress=False)
    fresh = tiny_pipeline(0)  # resuming a finished run loads its weights without training
    again = train(
        fresh, source, target, aux, config, output_dir=tmp_path, resume=True, progress=False
    )
    assert again.losses == result.losses
    assert all(torch.equal(v, trained[k]) for k, v in fresh.unet.state_dict().items())


def _interrupt_at(step: int):
    def callback(done: int, loss: float) -> None:
        if done == step:  # a real Ctrl-C: the loop finishes the next step, checkpoints, stops
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def test_resume_equals_uninterrupted_run(images, tmp_path):
    source, target, aux = images
    config = IDLConfig(steps=20, lr=1e-3, checkpoint_every=5, seed=7)
    whole_pipe = tiny_pipeline(0)
    whole = train(
        whole_pipe, source, target, aux, config, output_dir=tmp_path / "whole", progress=False
    )

    out = tmp_path / "split"
    with pytest.raises(TrainingInterrupted, match="step 10 of 20"):
        train(
            tiny_pipeline(0),
            source,
            target,
            aux,
            config,
            output_dir=out,
            progress=False,
            callback=_interrupt_at(9),
        )
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000010"]
    assert not (out / "pipeline").exists()
    with pytest.raises(FileExistsError, match="unfinished"):
        train(tiny_pipeline(0), source, target, aux, config, output_dir=out, progress=False)
    with pytest.raises(ValueError, match="config.lr"):
        train(
            tiny_pipeline(0),
            source,
            target,
            aux,
            IDLConfig(steps=20, lr=1e-2, seed=7),
            output_dir=out,
            resume=True,
            progress=False,
        )

    split_pipe = tiny_pipeline(0)
    split = train(
        split_pipe, source, target, aux, config, output_dir=out, resume=True, progress=False
    )
    assert split.resumed_from == 10
    assert split.losses == whole.losses
    expected = whole_pipe.unet.state_dict()
    for k, v in split_pipe.unet.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)


def test_the_auxiliary_terms_weight(images, tmp_path):
    """aux_weight scales the auxiliary term's gradient: at 0 the auxiliary images cannot matter,
    at the paper's 1 the run is the one it was before the setting existed (same fingerprint)."""
    from styo.idl import run_fingerprint, term_weights

    source, target, aux = images
    other_aux = [aux[1], aux[0].transpose(Image.FLIP_LEFT_RIGHT)]

    def trained(config, aux_images, name):
        pipe = tiny_pipeline(0)
        train(pipe, source, target, aux_images, config, output_dir=tmp_path / name, progress=False)
        return _unet_state(pipe)

    unweighted = IDLConfig(steps=3, lr=1e-3, checkpoint_every=0, aux_weight=0.0)
    a, b = trained(unweighted, aux, "a"), trained(unweighted, other_aux, "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    paper = IDLConfig(steps=3, lr=1e-3, checkpoint_every=0)
    c, d = trained(paper, aux, "c"), trained(paper, other_aux, "d")
    assert not all(torch.equal(c[k], d[k]) for k in c)
    assert term_weights(paper, 3).tolist() == [1.0, 1.0, 1.0] and term_weights(paper, 2).tolist() == [1.0, 1.0]
    pipe = tiny_pipeline(0)
    assert "aux_weight" not in run_fingerprint(pipe, paper, source, target, aux)["config"]
    heavier = IDLConfig(steps=3, lr=1e-3, checkpoint_every=0, aux_weight=3.0)
    assert run_fingerprint(pipe, heavier, source, target, aux)["config"]["aux_weight"] == 3.0


def test_target_variants_recolour_and_mirror_the_target():
    """Twelve variants: every order of the colour channels, as drawn and mirrored, the image first."""
    from styo.idl import target_variants

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    pixels = np.asarray(image)
    variants = [np.asarray(v) for v in target_variants(image)]
    assert len(variants) == 12 and np.array_equal(variants[0], pixels)
    assert len({v.tobytes() for v in variants}) == 12
    for drawn, mirrored in zip(variants[::2], variants[1::2], strict=True):
        assert np.array_equal(mirrored, drawn[:, ::-1])
        # the same three channels, reordered: each channel of the variant is one of the image's
        assert all(any(np.array_equal(drawn[..., c], pixels[..., k]) for k in range(3)) for c in range(3))
    assert np.array_equal(np.asarray(image), pixels)  # the caller's image is untouched


def test_augmented_target_draws_its_variants(images, tmp_path):
    """With ``augment_target`` the target term sees several variants and the auxiliary draws skip
    them; without it every draw is the one runs made before the setting existed."""
    from styo.idl import (
        _prepare_fixed,
        _training_images,
        draw_batch,
        run_fingerprint,
        step_generator,
    )

    source, target, aux = images
    pipe = tiny_pipeline(0)
    prompts = prompts_for(IDLConfig())
    variants, _ = _training_images(target, aux, IDLConfig(augment_target=True))
    plain = _prepare_fixed(pipe, source, [target], aux, [], prompts, "cpu", embed=True)
    varied = _prepare_fixed(pipe, source, variants, aux, [], prompts, "cpu", embed=True)
    assert (plain.n_targets, varied.n_targets) == (1, 12) and len(varied.mean) == len(plain.mean) + 11
    seen = set()
    for step in range(40):
        z_plain, _, t_plain, n_plain = draw_batch(step_generator(0, step), plain, 3, 2, 1000, "cpu")
        z_var, _, t_var, n_var = draw_batch(step_generator(0, step), varied, 3, 2, 1000, "cpu")
        assert torch.equal(t_plain, t_var) and torch.equal(n_plain, n_var)
        torch.testing.assert_close(z_plain[:2], z_var[:2])  # the source's
        torch.testing.assert_close(z_plain[4:], z_var[4:])  # the auxiliary portraits'
        eps = (z_plain[2:4] - plain.mean[1]) / plain.std[1]  # the posterior draws, shared
        for z, e in zip(z_var[2:4], eps, strict=True):
            misfit = [float((z - varied.mean[i] - varied.std[i] * e).abs().max()) for i in range(1, 13)]
            assert min(misfit) < 1e-4  # exactly one of the variants
            seen.add(int(np.argmin(misfit)))
    assert len(seen) > 3
    config = IDLConfig(steps=2, lr=1e-3, checkpoint_every=0, augment_target=True)
    assert run_fingerprint(pipe, config, source, target, aux)["config"]["augment_target"] is True
    assert "augment_target" not in run_fingerprint(pipe, IDLConfig(), source, target, aux)["config"]
    a, b = tiny_pipeline(0), tiny_pipeline(0)
    train(a, source, target, aux, config, output_dir=tmp_path / "a", progress=False)
    train(b, source, target, aux, IDLConfig(steps=2, lr=1e-3, checkpoint_every=0), output_dir=tmp_path / "b",
          progress=False)
    assert not all(torch.equal(x, y) for x, y in zip(_unet_state(a).values(), _unet_state(b).values(), strict=True))


def test_painted_portraits_train_the_target_style_on_other_faces(images, tmp_path):
    """``target_aux`` adds a fourth term, the auxiliary portraits painted with the target's texture
    under the target-style auxiliary prompt; each of its draws is one of the painted posteriors."""
    from styo.idl import (
        _prepare_fixed,
        _training_images,
        draw_batch,
        run_fingerprint,
        step_generator,
        term_weights,
    )
    from styo.prompts import target_aux_prompt

    source, target, aux = images
    pipe = tiny_pipeline(0)
    config = IDLConfig(steps=2, lr=1e-3, checkpoint_every=0, target_aux=2, aux_weight=0.5)
    prompts = prompts_for(config)
    assert list(prompts) == ["source", "target", "aux", "target_aux"]
    assert prompts["target_aux"] == target_aux_prompt() == "a drawing with aug not ak47 style of portrait"
    assert term_weights(config, 4).tolist() == [1.0, 1.0, 0.5, 0.5]
    targets, painted = _training_images(target, aux, config)
    assert targets == [target] and len(painted) == 2
    fixed = _prepare_fixed(pipe, source, targets, aux, painted, prompts, "cpu", embed=True)
    assert (fixed.n_aux, fixed.n_painted, len(fixed.mean)) == (2, 2, 6)
    fixed.std.zero_()  # every draw is then exactly the mean of the image it drew
    seen = set()
    for step in range(20):
        z, prompt_idx, _, _ = draw_batch(step_generator(0, step), fixed, 4, 2, 1000, "cpu")
        assert prompt_idx.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        drawn = [[i for i in range(6) if torch.equal(sample, fixed.mean[i])] for sample in z]
        assert drawn[:4] == [[0], [0], [1], [1]] and all(d in ([2], [3]) for d in drawn[4:6])
        assert all(d in ([4], [5]) for d in drawn[6:])
        seen.update(d[0] for d in drawn[6:])
    assert seen == {4, 5}
    assert run_fingerprint(pipe, config, source, target, aux)["config"]["target_aux"] == 2
    assert "target_aux" not in run_fingerprint(pipe, IDLConfig(), source, target, aux)["config"]
    run = train(pipe, source, target, aux, config, output_dir=tmp_path / "run", progress=False)
    assert list(run.term_losses) == ["source", "target", "aux", "target_aux"]
    assert set(evaluate(pipe, source, target, aux, config)) == {"source", "target", "aux", "target_aux", "total"}
    untouched = tiny_pipeline(0)
    with pytest.raises(ValueError, match="cannot paint 3 portraits from an auxiliary set of 2"):
        train(untouched, source, target, aux, IDLConfig(steps=1, target_aux=3), output_dir=tmp_path / "x")
    fresh = _unet_state(tiny_pipeline(0))  # the refusal came before any LoRA or dtype change
    assert _unet_state(untouched).keys() == fresh.keys()
    assert all(torch.equal(v, fresh[k]) for k, v in _unet_state(untouched).items())
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="needs use_aux=True"):
        IDLConfig(use_aux=False, target_aux=2)
    with pytest.raises(ValueError, match="target_aux must be an integer >= 0"):
        IDLConfig(target_aux=-1)


def test_no_aux_positive_only_and_v_prediction(images, tmp_path):
    source, target, _ = images
    pipe = tiny_pipeline(0)
    pipe.scheduler = DDIMScheduler.from_config(
        pipe.scheduler.config, prediction_type="v_prediction"
    )
    config = IDLConfig(steps=2, lr=1e-3, use_aux=False, negative=False, checkpoint_every=0)
    result = train(pipe, source, target, [], config, output_dir=tmp_path, progress=False)
    assert set(result.term_losses) == {"source", "target"}
    assert result.prompts["target"] == "a drawing with aug style of m4a1 portrait"
    assert not (tmp_path / "checkpoints").exists()


def test_lora_trains_only_adapters(images, tmp_path):
    source, target, aux = images
    pipe = tiny_pipeline(0)
    base = _unet_state(pipe)
    config = IDLConfig(steps=3, lr=1e-2, lora_rank=4, checkpoint_every=3)
    result = train(pipe, source, target, aux, config, output_dir=tmp_path, progress=False)
    saved = load_file(result.checkpoint_dir / "step-000003" / "trainable.safetensors")
    assert saved and all("lora" in k for k in saved)

    merged = pipe.unet.state_dict()
    assert merged.keys() == base.keys()  # adapters merged and removed
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.rsplit(".", 2)[-2] in {"to_q", "to_k", "to_v", "0"} for k in changed)
    assert all(".attn" in k and k.endswith("weight") for k in changed)
    loaded = StableDiffusionPipeline.from_pretrained(result.pipeline_dir, use_safetensors=True)
    assert all(torch.equal(v, merged[k]) for k, v in loaded.unet.state_dict().items())


def test_text_encoder_accumulation_and_checkpointing(images, tmp_path):
    source, target, aux = images
    pipe = tiny_pipeline(0)
    te_before = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    vae_before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    config = IDLConfig(
        steps=2,
        lr=1e-3,
        train_text_encoder=True,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
        batch_size=2,
        checkpoint_every=0,
    )
    train(pipe, source, target, aux, config, output_dir=tmp_path, progress=False)
    te_after, vae_after = pipe.text_encoder.state_dict(), pipe.vae.state_dict()
    assert any(not torch.equal(te_before[k], te_after[k]) for k in te_before)
    assert all(torch.equal(vae_before[k], vae_after[k]) for k in vae_before)
    assert not pipe.unet.is_gradient_checkpointing


def test_bf16_after_fp32_in_one_process(images, tmp_path):
    source, target, aux = images
    pipe = tiny_pipeline(0)
    config = IDLConfig(steps=1, lr=1e-3, mixed_precision="bf16", checkpoint_every=0)
    result = train(pipe, source, target, aux, config, output_dir=tmp_path, progress=False)
    assert np.isfinite(result.losses).all() and pipe.unet.dtype == torch.float32


def test_8bit_adam_without_bitsandbytes(images, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    source, target, aux = images
    with pytest.raises(ImportError, match=r"pip install 'styo\[t4\]' \(or pip install bitsandbytes\)"):
        train(
            tiny_pipeline(0),
            source,
            target,
            aux,
            IDLConfig(steps=1, use_8bit_adam=True),
            output_dir=tmp_path,
            progress=False,
        )


def test_evaluate_in_chunks_gives_the_same_losses(images):
    """evaluate sends a few images per UNet call (SD's 202 at once do not fit a T4)."""
    source, target, aux = images
    pipe = tiny_pipeline(0)
    aux = aux * 3  # 8 images: chunks of 3 leave a partial last chunk
    whole = evaluate(pipe, source, target, aux, chunk=len(aux) + 2)
    chunked = evaluate(pipe, source, target, aux, chunk=3)
    assert chunked == pytest.approx(whole, rel=1e-5)
    with pytest.raises(ValueError, match="chunk"):
        evaluate(pipe, source, target, aux, chunk=0)


def test_wrong_image_size_is_refused(images, tmp_path):
    source, target, aux = images
    with pytest.raises(ValueError, match="load_image"):
        train(
            tiny_pipeline(0),
            source.resize((32, 32)),
            target,
            aux,
            IDLConfig(steps=1),
            output_dir=tmp_path,
            progress=False,
        )
