"""Reading the golden fixtures that tools/hallo_reference.py wrote from Hallo's own code (tests/fixtures/hallo/)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

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
