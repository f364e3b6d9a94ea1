"""Real loading paths on small files made here: a diffusers backbone folder, a wav2vec2 folder, the
weights file, all through ``PortraitTalkPipeline.from_pretrained``; and the backbone's error paths."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2Model

from conftest import tone
from portraittalk_core.backbone import load_backbone, random_backbone
from portraittalk_core.config import tiny
from portraittalk_core.errors import WeightsError
from portraittalk_core.io.video import probe_video
from portraittalk_core.models import PortraitTalkModel
from portraittalk_core.generation.settings import GenerationSettings
from portraittalk_core.pipeline import PortraitTalkPipeline
from portraittalk_core.weights import save_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    config = tiny().replace(audio_front_end="wav2vec2", audio_layers=3, audio_dim=32)
    wav2vec2 = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                            intermediate_size=64, conv_dim=(32, 32), conv_stride=(5, 64),
                                            conv_kernel=(10, 64), num_conv_pos_embeddings=16,
                                            num_conv_pos_embedding_groups=2))
    wav2vec2.save_pretrained(root / "wav2vec2", safe_serialization=True)
    backbone = random_backbone(config, seed=1)
    backbone.save_folder(root / "sd")
    model = PortraitTalkModel(config, backbone.unet)
    save_model(model, root / "portraittalk" / "tiny_w2v.safetensors")
    return root, model


def test_from_pretrained_generates_with_loaded_files(files, reference_path, tmp_path):
    root, model = files
    pipe = PortraitTalkPipeline.from_pretrained(root / "portraittalk" / "tiny_w2v.safetensors", backbone=root / "sd",
                                                wav2vec2_folder=root / "wav2vec2")
    loaded = pipe.model.trainable_state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.trainable_state_dict().items())
    result = pipe([reference_path], (tone(0.7), 16_000), tmp_path / "out.mp4", GenerationSettings(steps=1),
                  progress=False)
    assert probe_video(result.path).frames == math.ceil(0.7 * 25)


def test_wav2vec2_model_needs_its_folder(files):
    root, _ = files
    with pytest.raises(WeightsError, match="--wav2vec2"):
        PortraitTalkPipeline.from_pretrained(root / "portraittalk" / "tiny_w2v.safetensors", backbone=root / "sd")


def test_backbone_folder_missing_parts_are_named(files, tmp_path):
    root, _ = files
    with pytest.raises(WeightsError) as err:
        load_backbone(tmp_path)
    assert "config.json" in str(err.value) and str(tmp_path / "unet") in str(err.value)


def test_backbone_refuses_pickles_and_foreign_files(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not loaded")
    with pytest.raises(WeightsError, match="never loaded"):
        load_backbone(ckpt)
    other = tmp_path / "sdxl.safetensors"
    save_file({"conditioner.embedders.0.x": torch.zeros(1)}, str(other))
    with pytest.raises(WeightsError, match="not a Stable Diffusion 1.x checkpoint"):
        load_backbone(other, tokenizer_folder=tmp_path)
    sd15_like = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
               "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 768)},
              str(sd15_like))
    with pytest.raises(WeightsError, match="--tokenizer"):
        load_backbone(sd15_like)
    with pytest.raises(WeightsError, match="looked for 'missing.safetensors'"):
        load_backbone(tmp_path / "missing.safetensors")


def test_single_file_of_another_family_is_named(tmp_path):
    sdxl_like = tmp_path / "sdxl.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
               "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 2048)},
              str(sdxl_like))
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(WeightsError, match="SDXL"):
        load_backbone(sdxl_like, tokenizer_folder=tmp_path)


def test_missing_weights_file_is_named(files, tmp_path):
    root, _ = files
    missing = tmp_path / "models" / "portraittalk" / "absent.safetensors"
    with pytest.raises(WeightsError) as err:
        PortraitTalkPipeline.from_pretrained(missing, backbone=root / "sd")
    assert "'absent.safetensors'" in str(err.value) and str(missing.parent) in str(err.value)
