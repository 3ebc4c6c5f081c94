"""Loading pipelines: local folders, hub ids while offline, device and dtype choice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import styo.pipeline as sp
from styo.pipeline import ModelLoadError, choose_dtype, image_size, load_pipeline
from styo.testing import TINY_IMAGE_SIZE, tiny_pipeline


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    tiny_pipeline(0).save_pretrained(folder, safe_serialization=True)
    return folder


def test_loads_local_folder_on_cpu(saved_tiny):
    pipe = load_pipeline(saved_tiny, device="cpu")
    assert pipe.device.type == "cpu" and pipe.unet.dtype == torch.float32
    assert pipe.safety_checker is None
    assert image_size(pipe) == TINY_IMAGE_SIZE
    reference = tiny_pipeline(0).unet.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in pipe.unet.state_dict().items())
    assert load_pipeline(str(saved_tiny), device="cpu", dtype=torch.bfloat16).unet.dtype == (
        torch.bfloat16
    )


def test_folder_without_model_index(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(tmp_path, device="cpu")
    msg = str(info.value)
    assert str(tmp_path) in msg and "not a diffusers pipeline folder" in msg
    assert "model_index.json" in msg and "unet/" in msg


def test_folder_of_another_pipeline_class(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelLoadError, match="FluxPipeline.*Stable Diffusion"):
        load_pipeline(tmp_path, device="cpu")


def test_pickle_only_weights_refused(saved_tiny, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(saved_tiny, folder)
    for f in (folder / "unet").glob("*.safetensors"):
        f.rename(f.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_pipeline(folder, device="cpu")


def test_missing_default_model_hints_at_pretraining(tmp_path, monkeypatch):
    missing = tmp_path / "models" / "styo-mini"
    monkeypatch.setattr(sp, "DEFAULT_MODEL", missing)
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(missing, device="cpu")
    assert "styo world pretrain" in str(info.value) and "--model" in str(info.value)
    assert sp.DEFAULT_MODEL.parent.name == "models"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_requested_without_gpu(saved_tiny):
    with pytest.raises(ModelLoadError, match="no CUDA GPU found; use --device cpu"):
        load_pipeline(saved_tiny, device="cuda")


def test_unknown_device():
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_pipeline("whatever", device="gpu0")


def test_offline_hub_id(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as info:
        load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5", device="cpu")
    msg = str(info.value)
    assert "offline" in msg and "--model" in msg and "local" in msg


def test_default_dtype():
    assert choose_dtype(torch.device("cpu")) == torch.float32
    assert choose_dtype(torch.device("cuda")) == torch.float16
    assert choose_dtype(torch.device("cpu"), torch.bfloat16) == torch.bfloat16


def test_importing_styo_silences_only_the_torchvision_advice():
    """The chapters' first cells stay free of transformers' torchvision fallback advice, while
    other warnings of the same logger still reach the reader."""
    code = (
        "import styo, transformers\n"
        "from transformers.utils import logging\n"
        "transformers.CLIPImageProcessor\n"  # the access that triggers the fallback advice
        "logging.get_logger('transformers.utils.import_utils').warning('another warning')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True)
    assert "requires torchvision" not in done.stderr
    assert "another warning" in done.stderr
