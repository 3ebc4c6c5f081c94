"""The IDL memory estimate: SD 1.5's counts as data, the T4 profile fits, the choice follows the GPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import benchmark_script

from styo import memory as M
from styo.profiles import PROFILES
from styo.testing import tiny_pipeline

T4 = 15_835_660_288  # what torch.cuda.get_device_properties reports for a Tesla T4 (14.75 GiB)

# SD 1.5's published parameter counts, rounded as the model cards give them (data, not the module's).
SD15 = M.ParamCounts(unet=859_520_000, text_encoder=123_060_000, vae=83_650_000,
                     lora_width=M.SD15_COUNTS.lora_width)


def estimate(profile: str, **fields) -> M.MemoryEstimate:
    return M.estimate_idl_memory(SD15, M.profile_config(profile, **fields))


def test_the_sd_profile_does_not_fit_a_t4_and_the_t4_profile_does():
    sd, t4 = estimate("sd"), estimate("sd-t4")
    assert sd.total_gib > 13, str(sd)
    assert t4.total_gib <= 14, str(t4)
    assert t4.total < 0.95 * T4
    for part in sd.parts:
        assert part in str(sd)  # the readable breakdown names every part


def test_full_fine_tuning_holds_16_bytes_per_unet_parameter_before_activations():
    """fp32 weights + fp32 gradients + two fp32 Adam moments: the ~13.8 GB of docs/design.md §4."""
    plain = estimate("sd", mixed_precision="no")
    state = sum(v for k, v in plain.parts.items() if k.startswith(("UNet weights", "UNet grad", "Adam")))
    assert state == 16 * SD15.unet
    assert state / 1e9 == pytest.approx(13.75, abs=0.01)


def test_each_t4_option_lowers_the_estimate():
    base = M.profile_config("sd")
    steps = [base, replace(base, use_8bit_adam=True),
             replace(base, use_8bit_adam=True, gradient_checkpointing=True)]
    totals = [M.estimate_idl_memory(SD15, c).total for c in steps]
    assert totals[0] > totals[1] > totals[2]
    adam = [M.estimate_idl_memory(SD15, c).parts for c in steps[:2]]
    assert adam[0]["Adam moments (fp32)"] == 4 * adam[1]["Adam moments (8-bit)"]
    fp32 = M.estimate_idl_memory(SD15, replace(base, mixed_precision="no"))
    act = [k for k in fp32.parts if k.startswith("UNet activations")][0]
    assert fp32.parts[act] == 2 * M.estimate_idl_memory(SD15, base).parts[act]


def test_lora_and_a_trained_text_encoder_change_what_is_held():
    base = M.profile_config("sd")
    lora = M.estimate_idl_memory(SD15, replace(base, lora_rank=4))
    assert lora.parts["LoRA rank 4 weights (fp32)"] == 4 * 4 * SD15.lora_width
    assert lora.total < M.estimate_idl_memory(SD15, base).total
    with_te = M.estimate_idl_memory(SD15, replace(base, train_text_encoder=True))
    extra = with_te.total - M.estimate_idl_memory(SD15, base).total
    assert extra == pytest.approx((8 + 8 - 2) * SD15.text_encoder)  # weights+grads+moments, no fp16 copy
    more = M.estimate_idl_memory(SD15, replace(base, batch_size=2))
    assert more.total > M.estimate_idl_memory(SD15, base).total


def test_param_counts_of_a_pipeline_and_lora_width():
    from styo.finetune import add_lora

    pipe = tiny_pipeline()
    counts = M.param_counts(pipe)
    assert counts.unet == sum(p.numel() for p in pipe.unet.parameters())
    assert counts.vae == sum(p.numel() for p in pipe.vae.parameters())
    assert counts.latent_size == pipe.unet.config.sample_size
    add_lora(pipe.unet, 3, seed=0)
    lora = sum(p.numel() for n, p in pipe.unet.named_parameters() if "lora" in n)
    assert lora == 3 * counts.lora_width


@pytest.fixture(scope="module")
def sd15_unet():
    bench = benchmark_script("sd_scale")
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**bench.SD15_UNET)


def test_sd15_counts_and_activation_constants_are_reproduced_on_the_meta_device(sd15_unet):
    """The module's constants come from SD 1.5's own architecture, re-measured here."""
    assert sum(p.numel() for p in sd15_unet.parameters()) == M.SD15_COUNTS.unet
    assert SD15.unet == pytest.approx(M.SD15_COUNTS.unet, rel=1e-5)
    width = sum(m.in_features + m.out_features for n, m in sd15_unet.named_modules()
                if isinstance(m, torch.nn.Linear) and n.endswith(("to_q", "to_k", "to_v", "to_out.0")))
    assert width == M.SD15_COUNTS.lora_width
    full = M.saved_activation_bytes(sd15_unet, 64)
    kept = M.saved_activation_bytes(sd15_unet, 64, checkpointing=True)
    assert 0.85 * M.ACTIVATIONS_PER_SAMPLE_64 < full <= M.ACTIVATIONS_PER_SAMPLE_64
    assert kept / full < M.CHECKPOINTED_SHARE - 0.25  # block inputs only; one block is added on top
    half = M.saved_activation_bytes(sd15_unet, 32)
    assert full / half == pytest.approx(4, rel=0.1)  # linear in latent area, as the estimate scales


def test_the_profile_is_chosen_by_gpu_memory():
    assert M.choose_sd_profile(T4)[0] == "sd-t4"
    assert M.choose_sd_profile(24 * M.GIB)[0] == "sd"
    assert M.choose_sd_profile(80 * M.GIB)[0] == "sd"
    name, why = M.choose_sd_profile(8 * M.GIB)
    assert name == "sd-t4" and "out of memory" in why
    name, why = M.choose_sd_profile(T4)
    assert "14.7 GiB GPU" in why and "sd-t4" in why
    if not torch.cuda.is_available():
        assert M.choose_sd_profile()[0] == "sd"


def test_the_t4_profile_is_the_sd_profile_with_memory_options():
    t4, sd = PROFILES["sd-t4"], PROFILES["sd"]
    assert t4["gradient_checkpointing"] and t4["use_8bit_adam"] and t4["mixed_precision"] == "fp16"
    assert not t4["train_text_encoder"]
    assert (t4["lr"], t4["steps"], t4["strength"]) == (sd["lr"], sd["steps"], sd["strength"])
    from styo.book import backend_settings

    settings = backend_settings("sd15", sd_profile="sd-t4")
    assert settings.idl.use_8bit_adam and settings.idl.gradient_checkpointing
    assert settings.aux_count == t4["aux"] and settings.profile == "sd-t4"
