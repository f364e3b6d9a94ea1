"""Hallo's ``net.pth``, key by key: where each of its tensors goes (issue 26, item 1; docs/hallo.md, section 2).

``hallo_destination(key, shape)`` names the destination of one of their keys, a ``Destination``:

- ``("unet", ldm_key)``: the denoising UNet's spatial weights (``denoising_unet.*`` outside its motion and audio
  modules; Hallo fine-tuned them, so they are the MODEL), named as an SD1.5 single-file checkpoint in the original
  LDM layout (``model.diffusion_model.input_blocks.1.1.proj_in.weight``), which ComfyUI's checkpoint and UNet
  loaders and diffusers' ``from_single_file`` read. The block ids come from ``comfyui/blocks.ldm_block``; the
  inverse, diffusers' own LDM -> diffusers converter, is run over it in tests/test_convert_hallo.py.
- ``("portraittalk", our_key)``: a name in the PortraitTalk file (``PortraitTalkModel.trainable_state_dict``):

  ============================================  ========================================================
  theirs                                        ours
  ============================================  ========================================================
  ``reference_unet.*``                          ``identity_net.unet.*`` (same names; theirs has no
                                                ``conv_norm_out``/``conv_out``)
  ``denoising_unet.<b>.motion_modules.<j>.*``   ``animate_net.unet.<b>.motion_modules.<j>.*`` in
                                                diffusers' names (``hallo_keys.MOTION_MODULE``)
  ``denoising_unet.<b>.audio_modules.<j>.*``    ``animate_net.unet.<b>.audio_blocks.<j>.*``
                                                (``hallo_keys.AUDIO_BLOCK``)
  ``face_locator.*``                            ``animate_net.structure_encoder.*``
  ``imageproj.*``                               ``identity_projection.*``
  ``audioproj.*``                               ``audio_projection.*`` (``FlatAudioProjection``'s names)
  ============================================  ========================================================

  **Audio blocks, a naming decision.** Hallo has one audio module after each spatial transformer of its denoiser
  (16 at SD1.5 size: ``<b>`` is ``down_blocks.0-2``, ``mid_block``, ``up_blocks.1-3``, ``<j>`` the transformer's
  index in its block). Ours are ``models/audio_block.RegionAudioBlock`` modules that the wiring step builds in
  AnimateNet's UNet under ``<b>.audio_blocks.<j>``, beside that block's ``attentions.<j>`` and
  ``motion_modules.<j>``, so that a layer's three modules share one index. Their widths: ``in_channels`` the
  block's output width, the inner width that of the resnet input of the same layer in a down block
  (hallo/models/unet_3d_blocks.py:552,586-590), the block's input width in an up block (1048-1052) and the mid
  block's width there (357-361).
- ``("skip", kept_key, reason)``: in their ``Net`` but never run by their inference, or a copy of another key:

  * the motion modules of the attention-free blocks (SD1.5: ``down_blocks.3`` and ``up_blocks.0``, 2 + 3 modules,
    135 keys once their duplicated tables are out). ``DownBlock3D`` and ``UpBlock3D`` call their motion modules
    only outside the gradient-checkpointing branch (hallo/models/unet_3d_blocks.py:903-927 and 1369-1400), and
    their inference runs the denoiser in training mode with checkpointing on, so these modules are bypassed.
    **Kept for training** under ``skipped.`` + the name they would have in AnimateNet
    (``skipped.animate_net.unet.down_blocks.3.motion_modules.0.proj_in.weight``): drop the prefix to load them
    (``portraittalk train --init``); inference never reads ``skipped.*``, and AnimateNet's own modules there keep
    their zero ``proj_out``, which makes each exactly the identity: the bypass, computed.
  * each motion module's second sinusoidal table (``hallo_keys.MOTION_MODULE_DUPLICATES``, 21 keys): a copy of the
    first, **dropped** (``kept_key`` None). ``same_as`` names the key it must equal, checked when their file is
    read.

Every key of their ``Net`` has exactly one destination; a key that is not theirs, or not of their shape, raises:
nothing is dropped silently. ``hallo_net_shapes()`` is their full key list with shapes, made from our own modules
at Hallo's sizes on the meta device through the inverse key maps (tests/test_convert_hallo.py checks it against
tests/fixtures/hallo/net_keys.json, written from their code).

``read_hallo_checkpoint(path)`` reads their file: ``torch.load(weights_only=True)``, only here and only for this
explicit conversion (plain tensors; a file that needs more is refused), then checked against that key list.
"""

from __future__ import annotations

import functools
import pickle
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from diffusers import MotionAdapter, UNet2DConditionModel

from ..comfyui.blocks import ldm_block
from ..config import PortraitTalkConfig, hallo
from ..errors import InputError, WeightsError
from ..models.audio_block import RegionAudioBlock, region_audio_widths
from ..io.safetensors import check_state_dict
from ..models.flat_audio_projection import FlatAudioProjection
from ..models.portraittalk import PortraitTalkModel
from ..models.projection import IdentityProjection
from ..models.structure import structure_encoder
from ..weights import KEPT_FOR_TRAINING as SKIPPED_PREFIX
from ..weights import save_model, save_tensors
from .hallo_keys import (AUDIO_BLOCK, AUDIO_PROJECTION, FACE_LOCATOR, IMAGE_PROJECTION, MOTION_MODULE,
                         MOTION_MODULE_DUPLICATES, rename)

UNET, PORTRAITTALK, SKIP = "unet", "portraittalk", "skip"
LDM_PREFIX = "model.diffusion_model."
# The names ``convert`` writes in its output folder (README, "Run Hallo's weights"; workflows/portraittalk_hallo.json).
UNET_FILE, MODEL_FILE = "hallo_unet.safetensors", "portraittalk_hallo.safetensors"

# Hallo's module sizes come from a config: by default the ``hallo`` preset (config.py), their full size
# (scripts/inference.py:206-220; face_locator.py:63-64) on SD1.5's UNet; ``hallo_tiny`` is the fixtures' size.

# Their parts of Net (scripts/inference.py:51-90) -> ours, for the modules renamed by one map.
_SMALL_MODULES = {
    "face_locator.": ("animate_net.structure_encoder.", FACE_LOCATOR),
    "imageproj.": ("identity_projection.", IMAGE_PROJECTION),
    "audioproj.": ("audio_projection.", AUDIO_PROJECTION),
}

# diffusers' UNet2DConditionModel names -> the LDM code's: the top-level layers and a resnet's sublayers.
_LDM_TOP = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
            "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
_LDM_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
               "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}
_UNET_LAYER = re.compile(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)")
_MID_LAYER = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")
_BLOCK_MODULE = re.compile(r"denoising_unet\.((?:down_blocks|up_blocks)\.\d+|mid_block)\.(motion|audio)_modules\."
                           r"(\d+)\.(.+)")


class Destination(NamedTuple):
    """Where one of their tensors goes. ``kind``: ``unet`` | ``portraittalk`` | ``skip``. ``key``: its name in that
    file; for a skip, the name it is kept under in the PortraitTalk file, or None when it is dropped. ``reason``:
    why a key is skipped. ``same_as``: for a dropped copy, their key whose tensor it must equal."""

    kind: str
    key: str | None
    reason: str | None = None
    same_as: str | None = None


def _fix() -> str:
    return "pass Hallo's own net.pth (its Hugging Face repository, hallo/net.pth) to the conversion"


def _unknown(key: str) -> WeightsError:
    return WeightsError(f"'{key}' is not a key of Hallo's Net (docs/hallo.md, section 2)", _fix())


def _rename_one(name: str, mapping: Mapping[str, str]) -> str:
    return next(iter(rename({name: None}, mapping)))


def _unet_layout(config: PortraitTalkConfig | None = None) -> tuple[int, set[int], set[int]]:
    """The UNet's (layers per down level, down levels without attention, up levels without attention); SD1.5's
    unless a config says otherwise."""
    unet = (config or hallo()).unet
    plain = (lambda types: {i for i, t in enumerate(types) if "CrossAttn" not in t})
    return unet["layers_per_block"], plain(unet["down_block_types"]), plain(unet["up_block_types"])


def ldm_unet_key(name: str, config: PortraitTalkConfig | None = None) -> str:
    """A diffusers UNet2DConditionModel key (of SD1.5, or of ``config``'s UNet) -> its key in an LDM single-file
    checkpoint."""
    per_level, _, plain_up = _unet_layout(config)
    top = [prefix for prefix in _LDM_TOP if name.startswith(prefix)]
    if top:
        return LDM_PREFIX + _LDM_TOP[top[0]] + name[len(top[0]):]
    if match := _MID_LAYER.fullmatch(name):
        kind, index, rest = match[1], int(match[2]), match[3]
        if kind == "resnets":  # LDM's middle block: resnet, transformer, resnet
            return LDM_PREFIX + f"middle_block.{2 * index}." + _rename_one(rest, _LDM_RESNET)
        return LDM_PREFIX + f"middle_block.{2 * index + 1}." + rest
    match = _UNET_LAYER.fullmatch(name)
    if not match:
        raise _unknown(name)
    part, level, kind, index, rest = match[1], int(match[2]), match[3], int(match[4]), match[5]
    if kind in ("downsamplers", "upsamplers"):
        if index != 0 or not rest.startswith("conv."):
            raise _unknown(name)
        # The resampler closes its level: one block after the last layer going down, inside the last layer going
        # up, after its resnet and (where the level has one) its transformer.
        _, block = ldm_block(part, level, per_level, per_level)
        if part == "down_blocks":
            return LDM_PREFIX + f"input_blocks.{block}.0.op." + rest[len("conv."):]
        return LDM_PREFIX + f"output_blocks.{block}.{1 if level in plain_up else 2}." + rest
    side, block = ldm_block(part, level, index, per_level)
    blocks = "input_blocks" if side == "input" else "output_blocks"
    if kind == "resnets":
        return LDM_PREFIX + f"{blocks}.{block}.0." + _rename_one(rest, _LDM_RESNET)
    return LDM_PREFIX + f"{blocks}.{block}.1." + rest


def _route(key: str, config: PortraitTalkConfig | None = None) -> Destination:
    """The destination of one of their keys by its name alone (``hallo_destination`` checks the key first)."""
    for theirs, (ours, mapping) in _SMALL_MODULES.items():
        if key.startswith(theirs):
            return Destination(PORTRAITTALK, ours + _rename_one(key[len(theirs):], mapping))
    if key.startswith("reference_unet."):
        name = key[len("reference_unet."):]
        ldm_unet_key(name, config)  # a UNet layer's name, or it raises
        return Destination(PORTRAITTALK, "identity_net.unet." + name)
    if not key.startswith("denoising_unet."):
        raise _unknown(key)
    match = _BLOCK_MODULE.fullmatch(key)
    if match is None:
        return Destination(UNET, ldm_unet_key(key[len("denoising_unet."):], config))
    block, kind, index, rest = match[1], match[2], match[3], match[4]
    if kind == "audio":
        return Destination(PORTRAITTALK, f"animate_net.unet.{block}.audio_blocks.{index}."
                           + _rename_one(rest, AUDIO_BLOCK))
    if rest in MOTION_MODULE_DUPLICATES:
        original = f"denoising_unet.{block}.motion_modules.{index}.{MOTION_MODULE_DUPLICATES[rest]}"
        return Destination(SKIP, None, "a copy of the same sinusoidal table in the module's first attention: "
                           "checked equal, dropped", same_as=original)
    ours = f"animate_net.unet.{block}.motion_modules.{index}." + _rename_one(rest, MOTION_MODULE)
    _, plain_down, plain_up = _unet_layout(config)
    part, _, level = block.partition(".")
    if level and int(level) in (plain_down if part == "down_blocks" else plain_up):
        return Destination(SKIP, SKIPPED_PREFIX + ours,
                           "motion module of an attention-free block, bypassed by their train-mode inference: "
                           "kept for training")
    return Destination(PORTRAITTALK, ours)


def hallo_destination(key: str, shape, config: PortraitTalkConfig | None = None) -> Destination:
    """Where their tensor ``key`` of ``shape`` goes in a Net of ``config``'s sizes (default: the ``hallo`` preset,
    their full size). Raises WeightsError for a key that is not in their Net or a shape that is not theirs."""
    expected = _net_shapes((config or hallo()).to_json())
    if key not in expected:
        raise _unknown(key)
    if tuple(shape) != expected[key]:
        raise WeightsError(f"'{key}' has the shape {tuple(shape)}, Hallo's Net has {expected[key]}", _fix())
    return _route(key, config)


# -- their key list, from our modules at their sizes ---------------------------------------------------------------
def _inverse(mapping: Mapping[str, str]) -> dict[str, str]:
    return {ours: theirs for theirs, ours in mapping.items()}


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@functools.lru_cache(maxsize=4)
def _net_shapes(config_json: str) -> dict[str, tuple[int, ...]]:
    """Their key list at the sizes of a config (cached by its JSON: configs are not hashable)."""
    config = PortraitTalkConfig.from_json(config_json)
    heads, cross = config.unet["attention_head_dim"], config.unet["cross_attention_dim"]
    channels = tuple(config.unet["block_out_channels"])
    with torch.device("meta"):
        unet = _shapes(UNet2DConditionModel(**config.unet))
        motion = _shapes(MotionAdapter(**config.motion))
        small = {
            "face_locator.": (structure_encoder(channels[0], config.structure_channels,
                                                config.structure_input_channels), FACE_LOCATOR),
            "imageproj.": (IdentityProjection(config.face_embed_dim, cross, config.identity_tokens), IMAGE_PROJECTION),
            "audioproj.": (FlatAudioProjection(config.audio_layers, config.audio_dim, config.audio_window, cross,
                                               config.audio_tokens, config.audio_hidden_dim), AUDIO_PROJECTION),
        }
        transformers = sorted({m[1] for k in unet if (m := re.match(r"(.+\.attentions\.\d+)\.", k))})
        audio = {}
        for name in transformers:
            block, _, index = name.rpartition(".attentions.")
            width, inner = region_audio_widths(block, int(index), channels)
            audio[f"{block}.audio_modules.{index}."] = _shapes(RegionAudioBlock(width, heads, inner // heads, cross))
    shapes = {f"reference_unet.{k}": v for k, v in unet.items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    shapes.update({f"denoising_unet.{k}": v for k, v in unet.items()})
    for key, shape in motion.items():
        block, index, rest = re.fullmatch(r"(.+)\.motion_modules\.(\d+)\.(.+)", key).groups()
        theirs = _rename_one(rest, _inverse(MOTION_MODULE))
        shapes[f"denoising_unet.{block}.motion_modules.{index}.{theirs}"] = shape
        for copy, original in MOTION_MODULE_DUPLICATES.items():
            if theirs == original:
                shapes[f"denoising_unet.{block}.motion_modules.{index}.{copy}"] = shape
    for prefix, module in audio.items():
        shapes.update({f"denoising_unet.{prefix}{k}": v for k, v in rename(module, _inverse(AUDIO_BLOCK)).items()})
    for prefix, (module, mapping) in small.items():
        shapes.update({prefix + k: v for k, v in rename(_shapes(module), _inverse(mapping)).items()})
    return shapes


def hallo_net_shapes(config: PortraitTalkConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Every key of Hallo's Net with its shape, from our modules at their sizes (on the meta device): the full-size
    Net, or the one of ``config``'s sizes."""
    return dict(_net_shapes((config or hallo()).to_json()))


# -- their file ----------------------------------------------------------------------------------------------------
def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _by_part(names: list[str]) -> str:
    """How many of ``names`` each part of Net holds (their first name component): 'reference_unet 682, ...'."""
    return ", ".join(f"{part} {count}" for part, count in Counter(n.split(".")[0] for n in names).items())


def _listed(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def read_hallo_checkpoint(path, config: PortraitTalkConfig | None = None) -> dict[str, torch.Tensor]:
    """Their ``net.pth`` as a state dict, checked: every key of their Net (at ``config``'s sizes; default their full
    size), of its shape, and nothing else; the duplicated position tables equal to the ones they copy. Plain tensors only (``weights_only``): a file that
    needs more to load is refused. Every problem is one WeightsError naming the file."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"Hallo checkpoint not found: looked for '{path.name}' in '{path.parent}'",
                           f"put net.pth (Hallo's Hugging Face repository, hallo/net.pth) in '{path.parent}' or "
                           "pass its path")
    if path.is_dir():
        inside = path / "net.pth"
        raise WeightsError(f"'{path}' is a folder, not Hallo's net.pth",
                           f"pass '{inside}'" if inside.is_file() else "pass the path of net.pth itself")
    try:
        # The one pickle read in the project: an explicit conversion of a third party's checkpoint, restricted to
        # tensors and plain containers (weights_only=True), on the CPU.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names what it refused: a class or function the pickle would have imported (an object), or an
        # opcode it does not know (not a torch checkpoint at all).
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise WeightsError(
                f"'{path}' holds a pickled Python object ({found[1]}) besides tensors; loading it could run code, "
                "so it is refused (torch.load with weights_only=True)",
                "convert the net.pth published by Hallo; for a checkpoint you saved yourself, save "
                "model.state_dict() (tensors only) with torch.save and convert that") from err
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", str(err), re.S)
        raise WeightsError(f"'{path}' is not a PyTorch checkpoint of plain tensors (torch.load with weights_only=True "
                           f"refused it: {detail[1] if detail else type(err).__name__})",
                           "the file is corrupt or incomplete: download net.pth again") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise WeightsError(f"'{path}' is not a readable PyTorch checkpoint ({_first_line(err)})",
                           "the file is corrupt or incomplete: download net.pth again") from err
    if not isinstance(state, Mapping):
        raise WeightsError(f"'{path}' holds a {type(state).__name__}, not a state dict (names -> tensors)", _fix())
    odd = next((f"'{k}' holds a {type(v).__name__}" for k, v in state.items()
                if not (isinstance(k, str) and isinstance(v, torch.Tensor))), None)
    if odd:
        raise WeightsError(f"'{path}' is not a plain state dict of tensors: {odd}", _fix())
    expected = _net_shapes((config or hallo()).to_json())
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} (file {tuple(state[k].shape)}, Net {expected[k]})"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = [f"{len(names)} {label} ({_by_part(names)}): {_listed(names)}"
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if names]
        raise WeightsError(f"'{path}' is not Hallo's Net checkpoint: " + "; ".join(parts), _fix())
    unequal = [k for k in state if (d := _route(k, config)).same_as and not torch.equal(state[k], state[d.same_as])]
    if unequal:
        raise WeightsError(f"'{path}': {len(unequal)} position tables differ from the ones they should copy: "
                           f"{_listed(unequal)}", _fix())
    return dict(state)


def split_hallo_checkpoint(state: Mapping[str, torch.Tensor], config: PortraitTalkConfig | None = None
                           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checked state dict of their Net (``read_hallo_checkpoint``) -> (the denoising UNet in LDM names, the
    PortraitTalk file's tensors: ``trainable_state_dict`` names plus the ``skipped.*`` ones kept for training).
    Dropped copies are left out (they were checked equal when the file was read)."""
    unet, portraittalk = {}, {}
    for key, tensor in state.items():
        destination = hallo_destination(key, tensor.shape, config)
        if destination.kind == UNET:
            unet[destination.key] = tensor
        elif destination.key is not None:
            portraittalk[destination.key] = tensor
    return unet, portraittalk


def convert_hallo(net, out, config: PortraitTalkConfig | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """``portraittalk convert hallo``: their ``net.pth`` -> two safetensors files in the folder ``out``:

    - ``hallo_unet.safetensors``: the denoising UNet in SD1.5's single-file (LDM) names, the MODEL for ComfyUI's
      stock UNet loader and for ``--backbone`` (with ``--vae``);
    - ``portraittalk_hallo.safetensors``: everything else as PortraitTalk weights of the ``hallo`` config (or
      ``config``), plus the bypassed motion modules under ``skipped.`` for ``train --init``.

    Tensors keep their dtype. Both files are written beside and renamed, never half-written; existing files are
    refused unless ``overwrite``. Returns (UNet file, PortraitTalk file)."""
    config = config or hallo()
    out = Path(out)
    targets = (out / UNET_FILE, out / MODEL_FILE)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' is a file, not a folder", "pass a folder for the two converted files")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise InputError(f"{' and '.join(existing)} already exist", "pass another --out folder, or --overwrite")
    unet, ours = split_hallo_checkpoint(read_hallo_checkpoint(net, config), config)
    dtype = next(iter(unet.values())).dtype
    with torch.device("meta"):
        model = PortraitTalkModel(config, None, identity_from_base=False)
    check_state_dict(model.trainable_state_dict(), {k: v for k, v in ours.items()
                                                    if not k.startswith(SKIPPED_PREFIX)}, f"'{net}' (converted)")
    source = {"source": "hallo", "source_file": Path(net).name}
    save_tensors(unet, targets[0], {"format": "sd15-unet", "dtype": str(dtype).removeprefix("torch."), **source})
    save_model(model, targets[1], source, tensors=ours)
    return targets
