"""PortraitTalk weights files: one safetensors file per model, config in its metadata.

The file holds ``PortraitTalkModel.trainable_state_dict()``: IdentityNet, AnimateNet's added modules
(identity/audio attention, structure encoder, temporal modules), the projections and, for models
without ArcFace, the builtin face encoder. AnimateNet's base UNet comes from the backbone. Metadata:
``format=portraittalk``, ``format_version``, ``config`` (JSON of ``PortraitTalkConfig``).
Only safetensors is read (io/safetensors.py): nothing is ever unpickled.

A file converted from another model family (``convert/``: metadata ``source``) whose config is not the one being
trained is a **warm start** (``warm_start``): the model is built at the training config and takes the file's tensors
that fit it, module by module; the rest keeps its fresh initialisation.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save_file

from .backbone import backbone_tensors
from .config import PortraitTalkConfig
from .errors import InputError, WeightsError
from .io.safetensors import check_state_dict, read_metadata, read_shapes, read_state_dict
from .models import PortraitTalkModel

FORMAT = "portraittalk"
FORMAT_VERSION = "1"
# Tensors a file keeps for training that inference never reads (a converted model's bypassed modules, under the name
# they would have without the prefix: convert/hallo.py); loading for inference leaves them out.
KEPT_FOR_TRAINING = "skipped."
# Metadata of a file converted from another model family (convert/): the family's name.
SOURCE = "source"


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


# -- warm start: a converted file of another config into the model being trained ----------------------------------
# A module is taken whole or not at all: one of AnimateNet's added modules (each motion module, each audio block, each
# attention processor, the structure encoder) or one of the model's parts (identity_net, the projections, ...). A
# module with a tensor whose name is in the file with another shape is another network (a structure encoder on
# another input, another audio projection): it starts fresh whole, so none of its layers is paired with layers it
# was never trained with. Tensors the file lacks (IdentityNet's conv_norm_out/conv_out) keep their initialisation.
_MODULE = re.compile(r"(?:^|\.)((motion_modules|audio_blocks)\.\d+|(processor)|(structure_encoder))\.")


def _module_and_part(name: str) -> tuple[str, str]:
    """(the module a tensor is taken with, the part the summary counts it in)."""
    found = _MODULE.search(name)
    if found is None:
        part = name.split(".", 1)[0]
        return part, part
    return name[:found.end() - 1], found[2] or found[3] or found[4]


def tensor_part(name: str) -> str:
    """The part of the model a tensor name belongs to: identity_net, motion_modules, audio_blocks, processor,
    structure_encoder, identity_projection, audio_projection, face_encoder, head_motion (the ``skipped.`` prefix
    dropped)."""
    return _module_and_part(name.removeprefix(KEPT_FOR_TRAINING))[1]


def _by_part(names, file_names: Mapping[str, str] | None = None) -> str:
    counts = Counter(tensor_part(n) for n in names)
    kept = Counter(tensor_part(n) for n in names if file_names and file_names[n].startswith(KEPT_FOR_TRAINING))
    return ", ".join(f"{part} {count}" + (f" ({kept[part]} from {KEPT_FOR_TRAINING}*)" if kept[part] else "")
                     for part, count in counts.items())


class WarmStart(NamedTuple):
    """What a warm start takes. ``taken``: model tensor -> the file's tensor it takes (a ``skipped.`` name for a
    module kept for training); ``fresh``: the model's tensors that keep their initialisation; ``unused``: the file's
    tensors that fit nothing; ``reshaped``: model tensor -> (its shape in the file, in the model), for the tensors
    whose name is in the file with another shape (their modules start fresh)."""

    taken: dict[str, str]
    fresh: list[str]
    unused: list[str]
    reshaped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]

    def summary(self, source: str = "") -> str:
        """One line: how many tensors were taken, per part, how many start fresh, and the file's unused ones."""
        line = f"warm start{f' from {source}' if source else ''}: took {len(self.taken)} tensors"
        line += f" ({_by_part(self.taken, self.taken)})" if self.taken else ""
        line += f"; {len(self.fresh)} start fresh" + (f" ({_by_part(self.fresh)})" if self.fresh else "")
        line += f"; {len(self.unused)} of the file's fit nothing" + (f" ({_by_part(self.unused)})"
                                                                       if self.unused else "")
        return line


def match_warm_start(model_shapes: Mapping[str, tuple[int, ...]],
                     file_shapes: Mapping[str, tuple[int, ...]]) -> WarmStart:
    """Which of a file's tensors a model takes in a warm start, from names and shapes alone (a pure function): a
    file tensor whose name, its ``skipped.`` prefix dropped, is a model tensor of the same shape, unless its module
    has a tensor of another shape in the file (see ``_MODULE``). ``model_shapes``: the model's
    ``trainable_state_dict`` (names -> shapes)."""
    found: dict[str, str] = {}
    for key in file_shapes:
        name = key.removeprefix(KEPT_FOR_TRAINING)
        if name in model_shapes and (name not in found or key == name):   # a plain name wins over a kept one
            found[name] = key
    reshaped = {name: (tuple(file_shapes[key]), tuple(model_shapes[name])) for name, key in found.items()
                if tuple(file_shapes[key]) != tuple(model_shapes[name])}
    other = {_module_and_part(name)[0] for name in reshaped}
    taken = {name: found[name] for name in model_shapes if name in found and _module_and_part(name)[0] not in other}
    used = set(taken.values())
    return WarmStart(taken, [n for n in model_shapes if n not in taken], [k for k in file_shapes if k not in used],
                     reshaped)


def converted_elsewhere(path, config: PortraitTalkConfig) -> bool:
    """True when ``path`` holds a model converted from another family (metadata ``source``) whose config is not
    ``config``: training ``config`` starts from it by a warm start. Any other file loads as it is (``load_model``:
    PortraitTalk's own weights bring their config; a converted file of ``config`` loads strictly). The VAE is left
    out of the comparison: training sets its latent scale. A missing or unreadable file raises WeightsError."""
    if SOURCE not in read_metadata(path):
        return False
    return read_config(path).replace(vae={}) != config.replace(vae={})


def _fits_something(result: WarmStart, path: Path, config: PortraitTalkConfig) -> WarmStart:
    if result.taken:
        return result
    example = next(iter(result.reshaped.items()), None)
    shapes = (f"; {len(result.reshaped)} of its names have other shapes (e.g. {example[0]}: file {example[1][0]}, "
              f"model {example[1][1]})" if example else "; no name is a tensor of the model")
    raise InputError(f"nothing in '{path}' (config '{read_config(path).name}') fits a model of config "
                     f"'{config.name}'{shapes}", "train with a config of the file's sizes (its own, or one whose UNet, "
                     "motion modules and projections have them: a --config .json of settings), or convert the "
                     "checkpoint at this config's size")


def plan_warm_start(path, config: PortraitTalkConfig) -> WarmStart:
    """``match_warm_start`` for a model of ``config`` (built on the meta device) and the file's header: what a warm
    start would take, before any weight is read or model built. Raises InputError when nothing fits."""
    path = Path(path)
    with torch.device("meta"):
        model = PortraitTalkModel(config, None, identity_from_base=False)
    shapes = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}
    files = {k: v for k, v in read_shapes(path).items() if not k.startswith("backbone.")}
    return _fits_something(match_warm_start(shapes, files), path, config)


def warm_start(model, path) -> WarmStart:
    """Load into ``model`` (a PortraitTalkModel being trained) every tensor of ``path`` that fits it
    (``match_warm_start``), in place; everything else keeps its initialisation. Raises InputError when nothing
    fits (a file of another size)."""
    path = Path(path)
    tensors = {k: v for k, v in read_state_dict(path).items() if not k.startswith("backbone.")}
    state = model.trainable_state_dict()
    result = match_warm_start({k: tuple(v.shape) for k, v in state.items()},
                              {k: tuple(v.shape) for k, v in tensors.items()})
    _fits_something(result, path, model.config)
    model.load_state_dict({name: tensors[key] for name, key in result.taken.items()}, strict=False)
    return result
