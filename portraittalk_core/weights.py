"""PortraitTalk weights files: one safetensors file per model, config in its metadata.

The file holds ``PortraitTalkModel.trainable_state_dict()``: IdentityNet, AnimateNet's added modules
(identity/audio attention, structure encoder, temporal modules), the projections and, for models
without ArcFace, the builtin face encoder. AnimateNet's base UNet comes from the backbone. Metadata:
``format=portraittalk``, ``format_version``, ``config`` (JSON of ``PortraitTalkConfig``).
Only safetensors is read: nothing is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import PortraitTalkConfig
from .errors import WeightsError

FORMAT = "portraittalk"
FORMAT_VERSION = "1"


def save_model(model, path, metadata: dict[str, str] | None = None, backbone=None) -> Path:
    """Write ``model`` (a PortraitTalkModel) to ``path``; written beside and renamed, never half-written.
    With ``backbone`` (a small backbone of our own, as the demo model's) it goes into the same file under
    ``backbone.``, so one file is the whole model."""
    from .backbone import backbone_tensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = dict(model.trainable_state_dict())
    if backbone is not None:
        tensors.update(backbone_tensors(backbone, "backbone."))
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json(), **(metadata or {})}
    if backbone is not None:
        meta["backbone"] = model.config.tokenizer  # the file carries a backbone (and names its tokenizer)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=meta)
    os.replace(partial, path)
    return path


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


def read_config(path) -> PortraitTalkConfig:
    path = Path(path)
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise WeightsError(f"'{path}' is a safetensors file but not PortraitTalk weights (no portraittalk "
                           "config in its metadata)", "pass a file saved by portraittalk (train or save_model)")
    try:
        return PortraitTalkConfig.from_json(meta["config"])
    except WeightsError as err:  # name the file: the config's own message cannot
        raise WeightsError(f"'{path}': {err.problem}", err.fix) from err


def read_state_dict(path, device="cpu") -> dict[str, torch.Tensor]:
    with _open(Path(path)) as handle:
        return {k: handle.get_tensor(k).to(device) for k in handle.keys()}


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


def load_model(path, base_unet=None, device="cpu", dtype=torch.float32):
    """Build the PortraitTalkModel described in the file and load its weights, checked by name and shape.

    With ``base_unet`` (the diffusers host) AnimateNet runs on that base. Without one (the ComfyUI host,
    which patches the user's own UNet) the network is built on the meta device, the file's tensors are
    assigned in place, and AnimateNet's base is left empty: no memory or time goes to a UNet nobody runs.
    """
    from .models import PortraitTalkModel

    path = Path(path)
    config = read_config(path)
    found = {k: v for k, v in read_state_dict(path).items() if not k.startswith("backbone.")}
    if base_unet is not None:
        model = PortraitTalkModel(config, base_unet, identity_from_base=False)
        check_state_dict(model.trainable_state_dict(), found, f"'{path}'")
        model.load_state_dict(found, strict=False)
        return model.to(device=device, dtype=dtype).eval()
    with torch.device("meta"):
        model = PortraitTalkModel(config, None, identity_from_base=False)
    check_state_dict(model.trainable_state_dict(), found, f"'{path}'")
    found = {k: v.to(dtype) if v.is_floating_point() else v for k, v in found.items()}
    model.load_state_dict(found, strict=False, assign=True)
    for module in model.modules():  # only AnimateNet's base is left on meta: check_state_dict saw the rest
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                module._parameters[name] = torch.nn.Parameter(torch.empty(0, dtype=dtype), requires_grad=False)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.empty(0, dtype=dtype)
    model.animate_net.base_is_empty = True
    return model.to(device=device).eval()
