"""Safetensors files read and checked: their metadata, their tensors, and tensors against a model's.

Only ``.safetensors`` is ever read: nothing is unpickled. A missing file, a folder, another extension or a
corrupt header is a ``WeightsError`` naming the file and the fix; so is a state dict that does not match the
model it is loaded into (``check_state_dict`` lists the missing, unexpected and mis-shaped tensors).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import WeightsError


def _open(path: Path):
    if not path.exists():
        raise WeightsError(f"PortraitTalk weights not found: looked for '{path.name}' in '{path.parent}'",
                           f"put the .safetensors file in '{path.parent}' or pass its path")
    if path.is_dir():
        raise WeightsError(f"'{path}' is a folder, not a weights file",
                           "pass the path of the .safetensors file inside it")
    if path.suffix.lower() != ".safetensors":
        raise WeightsError(f"'{path}' is not a .safetensors file; PortraitTalk never loads pickled weights",
                           "use the .safetensors release of the weights")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # safetensors raises its own types for a bad header
        raise WeightsError(f"'{path}' is not a readable safetensors file ({err})",
                           "the file is corrupt or incomplete: download or train it again") from err


def read_metadata(path) -> dict[str, str]:
    with _open(Path(path)) as handle:
        return dict(handle.metadata() or {})


def read_state_dict(path, device="cpu") -> dict[str, torch.Tensor]:
    with _open(Path(path)) as handle:
        return {k: handle.get_tensor(k).to(device) for k in handle.keys()}


def read_shapes(path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the file's header alone: no tensor is read."""
    with _open(Path(path)) as handle:
        return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str,
                     limit: int = 5) -> None:
    """Raise a readable WeightsError listing the first missing, unexpected and mis-shaped tensors."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} (file {tuple(found[k].shape)}, model {tuple(expected[k].shape)})"
             for k in expected if k in found and found[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, names in (("wrong shape", wrong), ("missing", missing), ("unexpected", unexpected)):
        if names:
            more = f" and {len(names) - limit} more" if len(names) > limit else ""
            parts.append(f"{len(names)} {label}: {', '.join(names[:limit])}{more}")
    raise WeightsError(f"the weights in {source} do not match the model: " + "; ".join(parts),
                       "use weights saved for this model config and version, or the matching --config")
