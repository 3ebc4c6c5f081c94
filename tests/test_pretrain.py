"""Pretraining of the miniature world: a killed run resumes to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from styo.world import pretrain as pt

TINY = dict(n_images=48, vae_images=40, vae_steps=4, vae_polish_steps=0, vae_texture_steps=4, vae_batch=4, unet_steps=4, unet_batch=4, checkpoint_every=2, warmup=2)


def _unet_weights(folder):
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}, pipe


@pytest.mark.slow
def test_interrupted_pretraining_resumes_to_the_same_pipeline(tmp_path, monkeypatch):
    cfg = pt.PretrainConfig(**TINY)
    pt.pretrain(tmp_path / "straight", tmp_path / "work-straight", cfg, device="cpu")

    real_save = pt.save_checkpoint
    killed = []

    def save_then_die(folder, *args, **kwargs):
        real_save(folder, *args, **kwargs)
        stage = Path(folder).name
        if stage in ("vae-texture-checkpoints", "unet-checkpoints") and stage not in killed:
            killed.append(stage)
            raise KeyboardInterrupt  # as if killed right after this stage's step-2 checkpoint

    monkeypatch.setattr(pt, "save_checkpoint", save_then_die)
    for _ in range(2):  # killed in the VAE's texture stage, then in the UNet stage
        with pytest.raises(KeyboardInterrupt):
            pt.pretrain(tmp_path / "resumed", tmp_path / "work-resumed", cfg, device="cpu")
    assert killed == ["vae-texture-checkpoints", "unet-checkpoints"] and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(pt, "save_checkpoint", real_save)
    pt.pretrain(tmp_path / "resumed", tmp_path / "work-resumed", cfg, device="cpu")

    straight, pipe = _unet_weights(tmp_path / "straight")
    resumed, resumed_pipe = _unet_weights(tmp_path / "resumed")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    for name, tensor in pipe.vae.state_dict().items():
        torch.testing.assert_close(resumed_pipe.vae.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    # The saved folder is a complete SD pipeline with the world's tokenizer and latent scale.
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.vae.config.scaling_factor != 0.18215
    assert pipe.unet.config.sample_size * 4 == 64
    assert sorted(p.suffix for p in (tmp_path / "straight" / "unet").iterdir()) == [".json", ".safetensors"]
    from styo.profiles import profile_of

    assert profile_of(tmp_path / "straight") == "mini"  # the folder names its settings profile

    # A snapshot of a run is the EMA of its newest checkpoint (step 2 of 4 here), as a pipeline.
    assert pt.snapshot(tmp_path / "work-straight", tmp_path / "snap") == 2
    snap, snap_pipe = _unet_weights(tmp_path / "snap")
    ema = load_file(tmp_path / "work-straight" / "unet-checkpoints" / "step-000002" / "ema.safetensors")
    names = list(pipe.unet.state_dict())  # parameters first, in module order, like the EMA keys
    params = [n for n, _ in pipe.unet.named_parameters()]
    for i, name in enumerate(params):
        torch.testing.assert_close(snap[name], ema[f"p{i}"], rtol=0, atol=0, msg=name)
    assert set(snap) == set(names) and snap_pipe.vae.config.scaling_factor == pipe.vae.config.scaling_factor
    assert not torch.equal(snap[params[0]], straight[params[0]])  # step 2 is not the final EMA
    assert profile_of(tmp_path / "snap") == "mini"
    record = json.loads((tmp_path / "snap" / "training.json").read_text())  # the run's recipe comes along
    assert record["snapshot_of_step"] == 2 and record["lineage"] == [] and record["unet_sec_per_step_median"] > 0
    assert record["config"] == json.loads((tmp_path / "work-straight" / "config.json").read_text())


def test_lr_schedule_warms_up_then_decays():
    f = [pt._lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] < f[9] == pytest.approx(1.0) and f[10] > f[50] > f[99] >= 0.1


def test_vae_sees_every_style_but_the_text_to_image_data_never_a_held_out_one(tmp_path):
    from styo.world.attributes import HELD_OUT_STYLES, STYLES

    cfg = pt.PretrainConfig(n_images=60, vae_images=60)
    vae_styles = {STYLES[i] for i in pt.build_vae_dataset(tmp_path, cfg)["styles"]}
    t2i_styles = {STYLES[i] for i in pt.build_dataset(tmp_path, cfg)["styles"]}
    assert set(HELD_OUT_STYLES) <= vae_styles
    assert not set(HELD_OUT_STYLES) & t2i_styles


def test_rendering_in_worker_processes_gives_the_same_dataset(tmp_path):
    from styo.world.attributes import PRETRAIN_STYLES

    one = pt._render_set(tmp_path / "a.npz", range(100, 125), PRETRAIN_STYLES, "a", workers=1, chunk=10)
    two = pt._render_set(tmp_path / "b.npz", range(100, 125), PRETRAIN_STYLES, "b", workers=2, chunk=10)
    assert one["images"].shape == (25, 64, 64, 3)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])


def test_unet_batches_prepared_by_loader_workers_train_the_same_weights(tmp_path):
    cfg = pt.PretrainConfig(**TINY)
    data = pt.build_dataset(tmp_path, cfg)
    g = torch.Generator().manual_seed(0)
    latents = {"mean": torch.randn(48, 4, 16, 16, generator=g), "std": torch.full((48, 4, 16, 16), 0.1),
               "scaling_factor": torch.tensor(1.0)}
    inline = pt.train_unet(data, latents, tmp_path / "inline", cfg, "cpu", loader_workers=0)[0]
    workers = pt.train_unet(data, latents, tmp_path / "workers", cfg, "cpu", loader_workers=2)[0]
    for (name, a), b in zip(inline.state_dict().items(), workers.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_vae_crops_sit_on_the_pixel_grid_and_whole_images_pass_through():
    x = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).view(2, 3, 64, 64)
    g = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(20):
        crop = pt._aligned_crop(x, 32, g)
        assert crop.shape == (2, 3, 32, 32)
        top, left = divmod(int(crop[0, 0, 0, 0].item()), 64)
        assert top % 8 == 0 and left % 8 == 0
        torch.testing.assert_close(crop, x[..., top : top + 32, left : left + 32])
        seen.add((top, left))
    assert len(seen) > 5  # the corner really moves
    assert pt._aligned_crop(x, 64, g) is x


def test_a_shipped_vae_replaces_stage_two(tmp_path):
    """--vae: the finished VAE is stage 2's result; no VAE data is rendered, no VAE step is run."""
    torch.manual_seed(5)
    vae = pt.arch.build_vae()
    (tmp_path / "trained").mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, tmp_path / "trained" / "vae.safetensors")
    folder = pt.export_vae(tmp_path / "trained", tmp_path / "styo-mini-vae")
    cfg = pt.PretrainConfig(**TINY)
    out = pt.pretrain(tmp_path / "out", tmp_path / "work", cfg, device="cpu", vae_dir=folder)
    assert not (tmp_path / "work" / "vae-dataset.npz").exists()
    assert not (tmp_path / "work" / "vae-checkpoints").exists()
    shipped = StableDiffusionPipeline.from_pretrained(out).vae.state_dict()
    for name, tensor in vae.state_dict().items():
        torch.testing.assert_close(shipped[name], tensor, rtol=0, atol=0, msg=name)
    # a pipeline folder works as --vae too; a work dir holding another VAE is refused
    pt.adopt_vae(out, tmp_path / "work")
    other = pt.arch.build_vae()
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="different encoder"):
        pt.adopt_vae(tmp_path / "other", tmp_path / "work")
    # a VAE with the same encoder and another decoder (stage 2b) replaces the held one
    torch.nn.init.zeros_(vae.decoder.conv_out.weight)
    vae.save_pretrained(tmp_path / "new-decoder")
    pt.adopt_vae(tmp_path / "new-decoder", tmp_path / "work")
    held = load_file(tmp_path / "work" / "vae.safetensors")
    assert not held["decoder.conv_out.weight"].any()
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        pt.adopt_vae(tmp_path, tmp_path / "work")
    from diffusers import AutoencoderKL

    AutoencoderKL(block_out_channels=(32,), norm_num_groups=32).save_pretrained(tmp_path / "alien")
    with pytest.raises(ValueError, match="architecture"):
        pt.load_vae_weights(tmp_path / "alien")


def test_vae_polish_steps_extend_the_schedule_without_changing_earlier_steps():
    """A longer polish passes through every step of a shorter one (same rates, same draws)."""
    base = pt.PretrainConfig(vae_steps=100, warmup=10)
    polished = pt.PretrainConfig(vae_steps=100, warmup=10, vae_polish_steps=50, vae_polish_lr=3e-4)
    longer = pt.PretrainConfig(vae_steps=100, warmup=10, vae_polish_steps=80, vae_polish_lr=3e-4)
    assert [pt._vae_lr(s, base) for s in range(100)] == [pt._vae_lr(s, polished) for s in range(100)]
    assert [pt._vae_lr(s, polished) for s in range(150)] == [pt._vae_lr(s, longer) for s in range(150)]
    assert {pt._vae_lr(s, longer) for s in range(100, 180)} == {3e-4}


def test_local_spectrum_scores_texture_at_the_wrong_phase_above_a_flat_fill():
    """Why stage 2b exists: for 3-px hatching, MSE prefers a flat grey to the same lines one pixel
    off; the local spectrum prefers the lines, so a codec that cannot encode the phase still draws
    them."""
    y, x = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    hatch = lambda phase: (((x + y + phase) % 3) == 0).float().expand(1, 3, 64, 64) * 2 - 1  # noqa: E731
    target, shifted = hatch(0), hatch(1)
    flat = torch.full_like(target, target.mean().item())
    mse = lambda a: torch.nn.functional.mse_loss(a, target).item()  # noqa: E731
    spec = lambda a: torch.nn.functional.l1_loss(pt.local_spectrum(a), pt.local_spectrum(target)).item()  # noqa: E731
    assert mse(shifted) > mse(flat)
    assert spec(shifted) < 0.25 * spec(flat)


def test_texture_stage_changes_the_decoder_only_and_mines_the_worst_style(tmp_path):
    cfg = pt.PretrainConfig(**TINY)
    pt.pretrain(tmp_path / "out", tmp_path / "work", cfg, device="cpu")
    before = load_file(tmp_path / "work" / "vae-mse.safetensors")
    after = load_file(tmp_path / "work" / "vae.safetensors")
    assert pt.same_encoder(before, after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    # the draw probabilities follow each style's measured texture loss, not a named style
    data = dict(np.load(tmp_path / "work" / "vae-dataset.npz"))
    vae = pt._load_vae(tmp_path / "work" / "vae-mse.safetensors", "cpu")
    prob = pt._texture_style_weights(vae, data, cfg, "cpu")
    styles = torch.from_numpy(data["styles"])
    assert prob.sum().item() == pytest.approx(1.0)
    for k in styles.unique():  # one probability per style, shared by its images
        assert prob[styles == k].unique().numel() == 1
    assert prob.unique().numel() > 1


def test_a_continuation_keeps_the_records_of_every_run_it_stands_on(tmp_path):
    import json

    lineage = pt.lineage
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "training.json").write_text(json.dumps({"config": {"unet_steps": 4000}}))
    assert lineage(first) == [{"config": {"unet_steps": 4000}}]
    (second / "training.json").write_text(json.dumps(
        {"config": {"unet_steps": 300, "init_from": str(first)}, "lineage": lineage(first)}))
    assert [r["config"]["unet_steps"] for r in lineage(second)] == [4000, 300]
    assert all("lineage" not in r for r in lineage(second))
    assert lineage(None) == [] and lineage(tmp_path) == []


@pytest.mark.slow
def test_a_continuation_that_trains_only_the_queries_and_keys_leaves_everything_else(tmp_path):
    tiny = dict(n_images=24, vae_images=24, vae_steps=2, vae_polish_steps=0, vae_texture_steps=2, vae_batch=4,
                unet_steps=2, unet_batch=4, checkpoint_every=1, warmup=1, layout="varied", grounding_weight=0.1)
    pt.pretrain(tmp_path / "base", tmp_path / "work-base", pt.PretrainConfig(**tiny), device="cpu")
    patterns = ("attn2.to_q", "attn2.to_k")
    cfg = pt.PretrainConfig(**tiny, draw_seed=1, init_from=str(tmp_path / "base"), train_only=patterns)
    pt.pretrain(tmp_path / "qk", tmp_path / "work-qk", cfg, device="cpu", vae_dir=tmp_path / "base")
    base, qk = (StableDiffusionPipeline.from_pretrained(tmp_path / name) for name in ("base", "qk"))
    moved = set()
    for (name, a), b in zip(base.unet.state_dict().items(), qk.unet.state_dict().values(), strict=True):
        if not any(pattern in name for pattern in patterns):
            assert torch.equal(a, b), name
        elif not torch.equal(a, b):
            moved.add(name)
    assert {n.split(".attn2.")[1] for n in moved} == {"to_q.weight", "to_k.weight"}
    assert len(moved) == 2 * sum(1 for n, _ in base.unet.named_parameters() if "attn2.to_q" in n)
    for (name, a), b in zip(base.text_encoder.state_dict().items(), qk.text_encoder.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "qk" / "training.json").read_text())["config"]["train_only"] == list(patterns)
    with pytest.raises(ValueError, match="give init_from too"):
        pt.PretrainConfig(train_only=patterns)
    with pytest.raises(ValueError, match="no UNet parameter name holds 'attn3'"):
        pt.freeze_all_but(base.unet, base.text_encoder, ("attn2.to_q", "attn3"))
    assert all(p.requires_grad for p in base.unet.parameters())  # a refused pattern freezes nothing
