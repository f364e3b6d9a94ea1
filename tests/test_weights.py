"""Weights files: safetensors only, config in the metadata, bit-exact round trip, readable mismatches."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from portraittalk_core.backbone import random_backbone
from portraittalk_core.config import PortraitTalkConfig, tiny
from portraittalk_core.errors import WeightsError
from portraittalk_core.io.safetensors import read_metadata
from portraittalk_core.models import PortraitTalkModel
from portraittalk_core.weights import load_model, read_config, save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    backbone = random_backbone(tiny())
    model = PortraitTalkModel(tiny(), backbone.unet)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_model(model, tmp_path_factory.mktemp("w") / "tiny.safetensors")
    return model, backbone, path


def test_round_trip_is_bit_exact(saved):
    model, backbone, path = saved
    loaded = load_model(path, backbone.unet)
    a, b = model.trainable_state_dict(), loaded.trainable_state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_config(path) == model.config
    meta = read_metadata(path)
    assert meta["format"] == "portraittalk" and meta["format_version"] == "1"


def test_config_json_round_trip():
    cfg = tiny()
    assert PortraitTalkConfig.from_json(cfg.to_json()) == cfg


def test_missing_file_names_file_and_folder(tmp_path):
    with pytest.raises(WeightsError) as err:
        load_model(tmp_path / "nowhere" / "model.safetensors")
    assert "'model.safetensors'" in str(err.value) and str(tmp_path / "nowhere") in str(err.value)


def test_pickle_files_are_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(WeightsError, match="never loads pickled"):
        load_model(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_model(path)


def test_foreign_safetensors(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not PortraitTalk weights"):
        load_model(path)


def test_mismatch_reports_first_names_and_shapes(saved, tmp_path):
    model, backbone, path = saved
    tensors = dict(model.trainable_state_dict())
    name = "identity_projection.proj.weight"
    tensors[name] = torch.zeros(3, 3)
    del tensors["audio_projection.layer_weights"]
    tensors["stray.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(broken), metadata=read_metadata(path))
    with pytest.raises(WeightsError) as err:
        load_model(broken, backbone.unet)
    text = str(err.value)
    assert name in text and "(3, 3)" in text
    assert "audio_projection.layer_weights" in text and "stray.weight" in text and "Fix:" in text


def test_loading_without_a_base_leaves_the_base_empty(saved):
    """The ComfyUI host patches the user's own UNet: AnimateNet's base is neither built nor kept."""
    model, _, path = saved
    loaded = load_model(path)
    a, b = model.trainable_state_dict(), loaded.trainable_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    empty = [n for n, t in [*loaded.named_parameters(), *loaded.named_buffers()] if t.numel() == 0]
    assert empty and all(PortraitTalkModel.is_base_parameter(n) for n in empty)
    assert all(t.numel() > 0 for n, t in loaded.state_dict().items() if not PortraitTalkModel.is_base_parameter(n))


def test_a_backbone_travels_inside_the_weights_file(saved, tmp_path, reference_path):
    from portraittalk_core.backbone import load_backbone, save_backbone
    from portraittalk_core.generation.settings import GenerationSettings
    from portraittalk_core.pipeline import PortraitTalkPipeline
    from conftest import tone

    model, backbone, _ = saved
    path = save_model(model, tmp_path / "demo.safetensors", backbone=backbone)
    again = load_backbone(path)
    for part in ("vae", "text_encoder", "unet"):
        a, b = getattr(backbone, part).state_dict(), getattr(again, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    only = load_backbone(save_backbone(backbone, model.config, tmp_path / "backbone.safetensors"))
    assert torch.equal(only.unet.conv_in.weight, backbone.unet.conv_in.weight)
    pipe = PortraitTalkPipeline.from_pretrained(path)          # no --backbone needed: it is inside
    result = pipe([reference_path], (tone(0.3), 16_000), None, GenerationSettings(steps=1), progress=False)
    assert result.frames == 8
