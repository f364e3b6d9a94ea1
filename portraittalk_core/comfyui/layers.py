"""What the ComfyUI host adds to the UNet's own computation besides the attention patches (patches.py): the layers it
inserts into the UNet's blocks, with the ``forward_timestep_embed`` handlers ComfyUI calls them through, and the
structure residual after ``conv_in``. Nothing here imports ComfyUI, so it is tested without it.

ComfyUI batches the guidance branches as chunks of all frames (``transformer_options["cond_or_uncond"]``); each
layer reads the per-run data of its chunks from the ``ComfyRun`` in ``transformer_options["portraittalk"]``.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import nn

from ..errors import InputError
from ..models.audio_block import REGIONS, RegionAudioBlock, mask_level
from ..models.motion_module import SkippedMotionModule, with_motion_prefix
from .blocks import layers_per_block, ldm_block
from .patches import KEY


def _chunks(transformer_options) -> list[int]:
    return list(transformer_options.get("cond_or_uncond", [0])) or [0]


class TemporalLayer(nn.Module):
    """An AnimateDiff temporal module inside a ComfyUI block; ``motion_scale`` blends it in. ``name``: the module's
    name in AnimateNet, under which a run may hold its motion-frame prefix (config ``motion_context``
    "reference_prefix")."""

    def __init__(self, module: nn.Module, motion_scale: float, name: str = ""):
        super().__init__()
        self.module, self.motion_scale, self.name = module, motion_scale, name

    def forward(self, x: torch.Tensor, frames: int, prefix: torch.Tensor | None = None) -> torch.Tensor:
        if prefix is None:
            out = self.module(x, num_frames=frames)
        else:
            # The module's own forward: AnimateNet's hooks join the prefix for the diffusers host from its
            # AttentionContext, which a ComfyUI run does not set; here the prefix comes from the ComfyRun.
            out = with_motion_prefix(self.module.forward, x, prefix, frames)
        return out if self.motion_scale == 1.0 else x + self.motion_scale * (out - x)


def temporal_handler(layer: TemporalLayer, x, emb, context, transformer_options, *unused):
    chunks = _chunks(transformer_options)
    run = transformer_options.get(KEY)
    prefix = None if run is None else run.prefix_rows(layer.name, chunks, *x.shape[-2:])
    if prefix is not None:
        prefix = prefix.to(x.device, x.dtype)
    return layer(x, x.shape[0] // len(chunks), prefix)


class RegionAudioLayer(nn.Module):
    """Hallo's audio block (models/audio_block.RegionAudioBlock) after a spatial transformer, reading the region
    masks of its UNet ``level`` (config ``audio_attention`` "region_blocks")."""

    def __init__(self, block: RegionAudioBlock, level: int):
        super().__init__()
        self.block, self.level = block, level

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, masks: dict[str, torch.Tensor],
                region_weights: tuple[float, float, float]) -> torch.Tensor:
        return self.block(x, tokens, masks, region_weights)


def region_audio_handler(layer: RegionAudioLayer, x, emb, context, transformer_options, *unused):
    run = transformer_options.get(KEY)
    if run is None:
        raise InputError("this MODEL has PortraitTalk's region audio blocks but no PortraitTalk run",
                         "sample it through the PortraitTalk nodes that patched it")
    chunks, rows = _chunks(transformer_options), x.shape[0]
    tokens = run.region_audio_rows(chunks, rows, x.device, x.dtype)
    masks = {region: run.region_mask_rows(region, layer.level, chunks, rows).to(x.device, x.dtype)
             for region in REGIONS}
    return layer(x, tokens, masks, run.region_weights)


class StructurePatch:
    """Input-block patch: adds the structure residual to the output of ``conv_in`` (input block 0). The residual is
    one for every frame (1, C0, h, w) or one a frame of the clip (F, C0, h, w; head motion), which the sampler sets
    before each clip: the batch holds the clip's frames once for each guidance branch. The chunks in ``off_chunks``
    get none (config ``uncond_inputs`` "zero": Hallo's unconditional row gets a zero face-locator residual,
    hallo/animate/face_animate.py:339-343)."""

    def __init__(self, residual: torch.Tensor, off_chunks: frozenset[int] = frozenset()):
        self.residual = residual
        self.off_chunks = off_chunks

    def __call__(self, h, transformer_options):
        if transformer_options.get("block") != ("input", 0):
            return h
        if self.residual.shape[-2:] != h.shape[-2:]:
            raise InputError(f"the structure maps are for {tuple(self.residual.shape[-2:])} latents but the sampler's are "
                             f"{tuple(h.shape[-2:])}", "use the same resolution in Load Identity Refs and the sampler")
        residual = self.residual.to(h.device, h.dtype)
        residual = (residual.expand(h.shape[0], -1, -1, -1) if residual.shape[0] == 1
                    else repeat(residual, "f ... -> (n f) ...", n=h.shape[0] // residual.shape[0]))
        chunks = _chunks(transformer_options)
        if self.off_chunks.intersection(chunks):
            kept = torch.tensor([c not in self.off_chunks for c in chunks], device=h.device, dtype=h.dtype)
            residual = residual * repeat(kept, "c -> (c f) 1 1 1", f=h.shape[0] // len(chunks))
        return h + residual

    def __deepcopy__(self, memo):
        return self


def _named_blocks(unet) -> list[tuple[str, int, nn.Module]]:
    """(diffusers part, level, block) in the order the UNet runs them."""
    return ([("down_blocks", i, b) for i, b in enumerate(unet.down_blocks)] + [("mid_block", 0, unet.mid_block)]
            + [("up_blocks", i, b) for i, b in enumerate(unet.up_blocks)])


def block_layers(animate_net, motion_scale: float) -> list[tuple[str, int, nn.Module]]:
    """(ComfyUI block, id, layer): the layers inserted after each spatial layer of the UNet, in the order they run
    there: Hallo's region audio block (after the spatial transformer, hallo/models/unet_3d_blocks.py:724-733), then
    the temporal module. Skipped motion modules (config ``motion_blocks`` "attention") get no layer."""
    unet = animate_net.unet
    per_level, levels = layers_per_block(unet), len(unet.config.block_out_channels)
    placed = []
    for part, level, block in _named_blocks(unet):
        name = part if part == "mid_block" else f"{part}.{level}"
        audio, motion = getattr(block, "audio_blocks", []), getattr(block, "motion_modules", [])
        for j in range(max(len(audio), len(motion))):
            where = ldm_block(part, level, j, per_level)
            if j < len(audio):
                placed.append((*where, RegionAudioLayer(audio[j], mask_level(name, levels))))
            if j < len(motion) and not isinstance(motion[j], SkippedMotionModule):
                placed.append((*where, TemporalLayer(motion[j], motion_scale, f"{name}.motion_modules.{j}")))
    return placed
