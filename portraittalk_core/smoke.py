"""Files for a smoke test of the ComfyUI pack with no real weights: a tiny PortraitTalk model with random
weights and its backbone, plus the shipped photo and speech, laid out as a ComfyUI base folder expects.

``portraittalk comfy-smoke --comfyui PATH`` writes them; ``workflows/portraittalk_tiny_smoke.json`` uses
them. The video shows noise, not a face: it checks the machinery, end to end, on any machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .assets import default_reference, default_speech
from .backbone import random_backbone
from .config import tiny
from .models import PortraitTalkModel
from .weights import save_model

WEIGHTS = "portraittalk_tiny_random.safetensors"
BACKBONE = "portraittalk_tiny_backbone"
REFERENCE = "portraittalk_reference.jpg"
SPEECH = "portraittalk_speech.flac"


def write_smoke_files(comfyui: Path, seed: int = 0) -> list[Path]:
    comfyui = Path(comfyui)
    backbone = random_backbone(tiny(), seed=seed)
    folder = backbone.save_folder(comfyui / "models" / "diffusers" / BACKBONE)
    torch.manual_seed(seed)
    model = PortraitTalkModel(tiny(), backbone.unet)
    model.animate_net.randomise_zero_outputs()  # every path contributes
    weights = save_model(model, comfyui / "models" / "portraittalk" / WEIGHTS,
                         metadata={"note": "random weights, for smoke tests only"})
    (comfyui / "input").mkdir(parents=True, exist_ok=True)
    reference = Path(shutil.copy(default_reference(), comfyui / "input" / REFERENCE))
    speech = Path(shutil.copy(default_speech(), comfyui / "input" / SPEECH))
    return [weights, folder, reference, speech]
