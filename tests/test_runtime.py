"""The sd15 path's time at a T4's speed, estimated from FLOPs counted on the meta device."""

from __future__ import annotations

import pytest

from styo import runtime


def test_the_sd15_work_constants_are_what_the_meta_device_counts():
    counted = runtime.sd15_flops()
    assert counted["unet"] == pytest.approx(runtime.SD15_UNET_TFLOP, rel=2e-3)
    assert counted["vae_decode"] == pytest.approx(runtime.SD15_VAE_DECODE_TFLOP, rel=2e-3)
    assert counted["vae_encode"] == pytest.approx(runtime.SD15_VAE_ENCODE_TFLOP, rel=2e-3)
    # the work grows with the number of pixels (a little faster, from self-attention)
    half = runtime.sd15_flops(256)
    assert 0.2 < half["unet"] / counted["unet"] < 0.3


def test_the_estimate_follows_the_work_each_unit_does():
    t4 = runtime.estimate_t4("sd-t4")
    sd = runtime.estimate_t4("sd")
    # the T4 rate reproduces the benchmark it was calibrated on: 6.9 guided iterations per second
    assert 2 * runtime.SD15_UNET_TFLOP / runtime.T4_TFLOPS == pytest.approx(1 / 6.9)
    assert t4.aux_set == pytest.approx(64 * t4.generated_picture)
    assert sd.aux_set == pytest.approx(200 * sd.generated_picture)
    # gradient checkpointing runs each block once more: 4 passes per step instead of 3
    assert t4.idl / sd.idl == pytest.approx(4 / 3)
    assert runtime.estimate_t4("sd-t4", idl_steps=200).idl == pytest.approx(t4.idl / 2)
    # a deeper diffusion runs more steps of both branches
    assert runtime.estimate_t4("sd-t4", strength=1.0).stylized_picture > t4.stylized_picture
    text = str(t4)
    assert "not measured" in text and "'sd-t4'" in text and "min" in text


@pytest.mark.parametrize("document", ["README.md", "book/intro.ipynb"])
def test_the_time_the_readme_and_the_intro_state_is_the_estimate(document):
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / document).read_text()
    if document.endswith(".ipynb"):
        text = "".join("".join(c["source"]) for c in json.loads(text)["cells"])
    text = " ".join(text.split())
    found = re.search(r"takes about (\d+) min for the auxiliary set .*?, (\d+) min for one IDL run "
                      r".*? and (\d+) s per stylized picture", text)
    assert found, f"{document} no longer states the sd15 time estimate"
    t4 = runtime.estimate_t4("sd-t4")
    assert [int(x) for x in found.groups()] == [round(t4.aux_set / 60), round(t4.idl / 60),
                                                round(t4.stylized_picture)]
