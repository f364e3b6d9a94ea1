"""PortraitTalk weights files: one safetensors file per model, config in its metadata.

The file holds ``PortraitTalkModel.trainable_state_dict()``: IdentityNet, AnimateNet's added modules
(identity/audio attention, structure encoder, temporal modules), the projections and, for models
without ArcFace, the builtin face encoder. AnimateNet's base UNet comes from the backbone. Metadata:
``format=portraittalk``, ``format_version``, ``config`` (JSON of ``PortraitTalkConfig``).
Only safetensors is read (io/safetensors.py): nothing is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .backbone import backbone_tensors
from .config import PortraitTalkConfig
from .errors import WeightsError
from .io.safetensors import check_state_dict, read_metadata, read_state_dict
from .models import PortraitTalkModel

FORMAT = "portraittalk"
FORMAT_VERSION = "1"
# Tensors a file keeps for training that inference never reads (a converted model's bypassed modules, under the name
# they would have without the prefix: convert/hallo.py); loading for inference leaves them out.
KEPT_FOR_TRAINING = "skipped."


def save_tensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str]) -> Path:
    """Write ``tensors`` to the safetensors file ``path``: beside it first, then renamed, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        # clones: safetensors refuses tensors that share memory (views, tied weights)
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(partial),
                  metadata=metadata)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return path


def save_model(model, path, metadata: dict[str, str] | None = None, backbone=None,
               tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` (a PortraitTalkModel) to ``path``; written beside and renamed, never half-written.
    With ``backbone`` (a small backbone of our own, as the demo model's) it goes into the same file under
    ``backbone.``, so one file is the whole model. ``tensors``: the file's tensors in place of the model's own
    (a conversion, whose model is only its config on the meta device)."""
    tensors = dict(model.trainable_state_dict() if tensors is None else tensors)
    if backbone is not None:
        tensors.update(backbone_tensors(backbone, "backbone."))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json(), **(metadata or {})}
    if backbone is not None:
        meta["backbone"] = model.config.tokenizer  # the file carries a backbone (and names its tokenizer)
    return save_tensors(tensors, path, meta)


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


def load_model(path, base_unet=None, device="cpu", dtype=torch.float32):
    """Build the PortraitTalkModel described in the file and load its weights, checked by name and shape.

    With ``base_unet`` (the diffusers host) AnimateNet runs on that base. Without one (the ComfyUI host,
    which patches the user's own UNet) the network is built on the meta device, the file's tensors are
    assigned in place, and AnimateNet's base is left empty: no memory or time goes to a UNet nobody runs.
    """
    path = Path(path)
    config = read_config(path)
    found = {k: v for k, v in read_state_dict(path).items() if not k.startswith(("backbone.", KEPT_FOR_TRAINING))}
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
