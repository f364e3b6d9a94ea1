"""Reading the golden fixtures that tools/hallo_reference.py wrote from Hallo's own code (tests/fixtures/hallo/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from portraittalk_core.face.detection import FaceDetection

FIXTURES = Path(__file__).parent / "fixtures" / "hallo"
BOUND = 1e-5
WRONG = 1e-3  # what a non-mirrored quirk must exceed: far above the bound, far below the outputs' scale


def fixture(name: str) -> tuple[dict, dict, dict, dict]:
    """(inputs, outputs, their state dict, the JSON) of one fixture, with the ``in.``/``out.``/``state.`` cut."""
    tensors = load_file(FIXTURES / f"{name}.safetensors")
    parts = {"in": {}, "out": {}, "state": {}}
    for key, value in tensors.items():
        part, rest = key.split(".", 1)
        parts[part][rest] = value
    return parts["in"], parts["out"], parts["state"], json.loads((FIXTURES / f"{name}.json").read_text())


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


class RawEmbeddingDetector:
    """Stands in for insightface: one face over the whole photo, with a fixed raw embedding of ``size`` values (the
    tiny Net's face embedding width by default)."""

    name = "raw-embedding-stand-in"

    def __init__(self, size: int = 16):
        self.embedding = np.linspace(-3, 3, size).astype(np.float32)

    def detect(self, image):
        h, w = image.shape[:2]
        return [FaceDetection(bbox=np.array([0, 0, w, h], np.float32), score=1.0, kps=np.zeros((5, 2), np.float32),
                              landmarks=np.zeros((0, 2), np.float32), regions={}, embedding=None,
                              raw_embedding=self.embedding)]
