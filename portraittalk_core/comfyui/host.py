"""AnimateNet's added modules hosted in the user's ComfyUI MODEL (the ComfyUI host of spec section 3).
Imports ComfyUI: only the nodes (and ComfyUI tests) import this module.

The MODEL is cloned and patched natively, so LoRAs and other patches upstream still apply:
- identity and audio attention: attention replace patches (patches.py);
- temporal modules: AnimateDiff modules injected into the UNet's blocks at load time and ejected after,
  as AnimateDiff-Evolved does, run through a ``forward_timestep_embed`` patch; the frames are the batch;
- structure guidance: an input-block patch adding the structure residual after ``conv_in``.
Per-run data travels in ``transformer_options["portraittalk"]`` (a ``ComfyRun``).
"""

from __future__ import annotations

import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample
from comfy.patcher_extension import PatcherInjection
from einops import repeat
from torch import nn

from ..errors import InputError
from .blocks import layers_per_block, ldm_block
from .patches import ComfyRun, attention_patches

KEY = "portraittalk"


class TemporalLayer(nn.Module):
    """An AnimateDiff temporal module inside a ComfyUI block; ``motion_scale`` blends it in."""

    def __init__(self, module: nn.Module, motion_scale: float):
        super().__init__()
        self.module, self.motion_scale = module, motion_scale

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        out = self.module(x, num_frames=frames)
        return out if self.motion_scale == 1.0 else x + self.motion_scale * (out - x)


def _temporal_handler(layer, x, emb, context, transformer_options, *unused):
    chunks = len(transformer_options.get("cond_or_uncond", [0])) or 1
    return layer(x, x.shape[0] // chunks)


def motion_placements(animate_net) -> list[tuple[str, int, nn.Module]]:
    """(ComfyUI block, id, module): where each diffusers motion module sits in the LDM block layout."""
    unet = animate_net.unet
    per_level = layers_per_block(unet)
    placements = []
    for i, block in enumerate(unet.down_blocks):
        placements += [(*ldm_block("down_blocks", i, j, per_level), m) for j, m in enumerate(block.motion_modules)]
    if hasattr(unet.mid_block, "motion_modules"):
        placements += [(*ldm_block("mid_block", 0, 0, per_level), m) for m in unet.mid_block.motion_modules]
    for i, block in enumerate(unet.up_blocks):
        placements += [(*ldm_block("up_blocks", i, j, per_level), m) for j, m in enumerate(block.motion_modules)]
    return placements


def _block(diffusion_model, kind: str, number: int):
    if kind == "middle":
        return diffusion_model.middle_block
    return (diffusion_model.input_blocks if kind == "input" else diffusion_model.output_blocks)[number]


def _insert_position(block, kind: str) -> int:
    """After the block's layers, before its upsampler; in the middle block, between attention and last ResBlock."""
    if kind == "middle":
        return len(block) - 1
    ups = [i for i, layer in enumerate(block) if isinstance(layer, Upsample)]
    return ups[0] if ups else len(block)


def motion_injection(animate_net, motion_scale: float) -> PatcherInjection:
    placements = motion_placements(animate_net)

    def inject(patcher):
        unet = patcher.model.diffusion_model
        for kind, number, module in placements:
            block = _block(unet, kind, number)
            block.insert(_insert_position(block, kind), TemporalLayer(module.to(patcher.load_device), motion_scale))

    def eject(patcher):
        unet = patcher.model.diffusion_model
        for kind, number, _ in placements:
            block = _block(unet, kind, number)
            for index in reversed(range(len(block))):
                if isinstance(block[index], TemporalLayer):
                    del block[index]

    return PatcherInjection(inject=inject, eject=eject)


class StructurePatch:
    """Input-block patch: adds the structure residual to the output of ``conv_in`` (input block 0). The residual is
    one for every frame (1, C0, h, w) or one a frame of the clip (F, C0, h, w; head motion), which the sampler sets
    before each clip: the batch holds the clip's frames once for each guidance branch."""

    def __init__(self, residual: torch.Tensor):
        self.residual = residual

    def __call__(self, h, transformer_options):
        if transformer_options.get("block") != ("input", 0):
            return h
        if self.residual.shape[-2:] != h.shape[-2:]:
            raise InputError(f"the structure maps are for {tuple(self.residual.shape[-2:])} latents but the sampler's are "
                             f"{tuple(h.shape[-2:])}", "use the same resolution in Load Identity Refs and the sampler")
        residual = self.residual.to(h.device, h.dtype)
        if residual.shape[0] == 1:
            return h + residual.expand(h.shape[0], -1, -1, -1)
        return h + repeat(residual, "f ... -> (n f) ...", n=h.shape[0] // residual.shape[0])

    def __deepcopy__(self, memo):
        return self


def check_model_family(model, config) -> None:
    """PortraitTalk's modules fit an SD1.5-family UNet of the weights' shape; say so plainly otherwise."""
    unet_config = model.model.model_config.unet_config
    context = unet_config.get("context_dim")
    channels = unet_config.get("model_channels")
    family = type(model.model).__name__
    if context != config.cross_attention_dim or channels != config.unet["block_out_channels"][0] or \
            unet_config.get("adm_in_channels") is not None:
        raise InputError(f"the MODEL is not of the family these PortraitTalk weights were made for ({family}, text "
                         f"width {context}, {channels} channels; the weights expect {config.cross_attention_dim} and "
                         f"{config.unet['block_out_channels'][0]})",
                         "load an SD1.5 checkpoint (SDXL, SD3 and Flux are not supported) with the matching "
                         "PortraitTalk weights")


def patch_model(model, animate_net, run: ComfyRun, structure: StructurePatch | None, motion_scale: float = 1.0):
    """A clone of ``model`` with PortraitTalk's attention, temporal and structure modules patched in."""
    patched = model.clone()
    for (kind, block, number, index), patch in attention_patches(animate_net).items():
        setter = patched.set_model_attn1_replace if kind == "attn1" else patched.set_model_attn2_replace
        setter(patch, block, number, index)
    patched.model_options["transformer_options"][KEY] = run
    if structure is not None:
        patched.set_model_input_block_patch(structure)
    patched.set_injections(KEY, [motion_injection(animate_net, motion_scale)])
    patched.set_model_forward_timestep_embed_patch((TemporalLayer, _temporal_handler))
    return patched


def structure_residual(animate_net, structure: torch.Tensor, device, dtype) -> torch.Tensor:
    with torch.inference_mode():
        return animate_net.structure_encoder(structure.to(device, dtype))

