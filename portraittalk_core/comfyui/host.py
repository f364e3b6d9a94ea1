"""AnimateNet's added modules hosted in the user's ComfyUI MODEL (the ComfyUI host of spec section 3).
Imports ComfyUI: only the nodes (and ComfyUI tests) import this module.

The MODEL is cloned and patched natively, so LoRAs and other patches upstream still apply:
- identity and audio attention: attention patches (patches.py);
- temporal modules (and Hallo's region audio blocks, before them): injected into the UNet's blocks at load time and
  ejected after, as AnimateDiff-Evolved does, run through ``forward_timestep_embed`` patches (layers.py); the frames
  are the batch;
- structure guidance: an input-block patch adding the structure residual after ``conv_in`` (layers.py);
- the model config's noise schedule, where it has one: the MODEL's ``model_sampling`` (model_sampling.py).
Per-run data travels in ``transformer_options["portraittalk"]`` (a ``ComfyRun``).
"""

from __future__ import annotations

import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample
from comfy.patcher_extension import PatcherInjection
from torch import nn

from ..errors import InputError
from .layers import (RegionAudioLayer, StructurePatch, TemporalLayer, block_layers, region_audio_handler,
                     temporal_handler)
from .model_sampling import schedule_sampling
from .patches import KEY, ComfyRun, attention_patches, bank_tokens_patch


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


def block_injection(placed: list[tuple[str, int, nn.Module]]) -> PatcherInjection:
    """Puts the ``block_layers`` into the UNet when ComfyUI loads the patched MODEL and takes them out after."""

    def inject(patcher):
        unet = patcher.model.diffusion_model
        for kind, number, layer in placed:  # in running order: each goes after the ones placed before it
            block = _block(unet, kind, number)
            block.insert(_insert_position(block, kind), layer.to(patcher.load_device))

    def eject(patcher):
        unet = patcher.model.diffusion_model
        for kind, number, _ in placed:
            block = _block(unet, kind, number)
            for index in reversed(range(len(block))):
                if isinstance(block[index], (TemporalLayer, RegionAudioLayer)):
                    del block[index]

    return PatcherInjection(inject=inject, eject=eject)


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


def patch_model(model, animate_net, run: ComfyRun, structure: StructurePatch | None, motion_scale: float = 1.0,
                schedule: dict | None = None):
    """A clone of ``model`` with PortraitTalk's attention, temporal, audio and structure modules patched in, each as
    the modules of ``animate_net`` were built for its config, and sampled on ``schedule`` (the config's, diffusers
    scheduler keys) where it has one."""
    patched = model.clone()
    for (kind, block, number, index), patch in attention_patches(animate_net).items():
        setter = patched.set_model_attn1_replace if kind == "attn1" else patched.set_model_attn2_replace
        setter(patch, block, number, index)
    bank_tokens = bank_tokens_patch(animate_net)
    if bank_tokens is not None:
        patched.set_model_attn1_patch(bank_tokens)
    patched.model_options["transformer_options"][KEY] = run
    if structure is not None:
        patched.set_model_input_block_patch(structure)
    placed = block_layers(animate_net, motion_scale)
    patched.set_injections(KEY, [block_injection(placed)])
    patched.set_model_forward_timestep_embed_patch((TemporalLayer, temporal_handler))
    if any(isinstance(layer, RegionAudioLayer) for _, _, layer in placed):
        patched.set_model_forward_timestep_embed_patch((RegionAudioLayer, region_audio_handler))
    if schedule:
        patched.add_object_patch("model_sampling", schedule_sampling(model, schedule))
    return patched


def structure_residual(animate_net, structure: torch.Tensor, device, dtype) -> torch.Tensor:
    with torch.inference_mode():
        return animate_net.structure_encoder(structure.to(device, dtype))

