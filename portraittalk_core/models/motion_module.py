"""Diffusers' AnimateDiff motion module run the way Hallo runs its AnimateDiff v2 modules (issue 26).

The module itself stays diffusers' ``AnimateDiffTransformer3D`` (what ``UNetMotionModel`` and ``MotionAdapter``
build, so AnimateNet's state-dict names do not change). Two things differ in Hallo and are options here:

- **Per-frame GroupNorm** (``normalise_per_frame``): diffusers normalises each group over all frames of a video
  together; the original AnimateDiff v2 code, which Hallo keeps, normalises every frame on its own
  (hallo/models/motion_module.py:284-290, a ``(b f) c h w`` GroupNorm). Everything after the norm is the same
  computation: proj_in, two temporal self-attentions each fed ``LayerNorm(x) + pe`` (the sinusoidal encoding
  enters the attention input only, motion_module.py:407-418,585-586, as diffusers' ``BasicTransformerBlock`` adds
  ``pos_embed`` after ``norm1``/``norm2``), the GEGLU feed-forward, proj_out and the residual.
- **Motion-frame prefix** (``with_motion_prefix``): Hallo prepends the previous clip's motion frames to each
  motion module's input and drops them from its output (hallo/models/unet_3d_blocks.py:737-748 down, 477-490 mid,
  1149-1202 up). The clip's frames then take positions n..n+f-1 of the encoding, and the prefix frames take part in
  every temporal attention. ``prefix_frames_from_bank`` makes those frames from the reference bank as Hallo does.
"""

from __future__ import annotations

import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from einops import rearrange
from torch import nn


class FrameGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that, given ``(b, c, f, h, w)`` as ``AnimateDiffTransformer3D`` passes it, normalises each
    frame on its own (statistics over ``c/groups, h, w``) instead of over all frames. Same parameters and names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return super().forward(x)
        frames = x.shape[2]
        per_frame = super().forward(rearrange(x, "b c f h w -> (b f) c h w"))
        return rearrange(per_frame, "(b f) c h w -> b c f h w", f=frames)


def normalise_per_frame(motion_module: AnimateDiffTransformer3D) -> AnimateDiffTransformer3D:
    """Switch one motion module, in place, to per-frame GroupNorm (Hallo, AnimateDiff v2 as first written); its
    weights, names and every other layer stay. Returns the module."""
    norm = motion_module.norm
    frame_norm = FrameGroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine,
                                device=norm.weight.device if norm.affine else None,
                                dtype=norm.weight.dtype if norm.affine else None)
    frame_norm.load_state_dict(norm.state_dict())
    motion_module.norm = frame_norm
    return motion_module


def join_motion_prefix(hidden_states: torch.Tensor, prefix: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``prefix`` ``((b n), c, h, w)`` before each video's ``num_frames`` frames of ``hidden_states``
    ``((b f), c, h, w)``: ``((b (n+f)), c, h, w)``."""
    videos = hidden_states.shape[0] // num_frames
    joined = torch.cat([rearrange(prefix.to(hidden_states.dtype), "(b n) c h w -> b n c h w", b=videos),
                        rearrange(hidden_states, "(b f) c h w -> b f c h w", b=videos)], dim=1)
    return rearrange(joined, "b f c h w -> (b f) c h w")


def drop_motion_prefix(out: torch.Tensor, videos: int, prefix_frames: int) -> torch.Tensor:
    """The clip's frames of a joined ``((b (n+f)), c, h, w)`` output: ``((b f), c, h, w)``."""
    return rearrange(rearrange(out, "(b f) c h w -> b f c h w", b=videos)[:, prefix_frames:],
                     "b f c h w -> (b f) c h w")


def with_motion_prefix(motion_module: nn.Module, hidden_states: torch.Tensor, prefix: torch.Tensor,
                       num_frames: int) -> torch.Tensor:
    """Run a motion module over ``prefix`` frames followed by the clip's frames and keep only the clip's outputs.

    ``hidden_states`` ``((b f), c, h, w)`` and ``prefix`` ``((b n), c, h, w)``, in diffusers' frame-in-batch
    layout, as ``UNetMotionModel``'s blocks call their motion modules. Returns ``((b f), c, h, w)``."""
    videos = hidden_states.shape[0] // num_frames
    prefix_frames = prefix.shape[0] // videos
    out = motion_module(join_motion_prefix(hidden_states, prefix, num_frames), num_frames=prefix_frames + num_frames)
    return drop_motion_prefix(out, videos, prefix_frames)


class SkippedMotionModule(nn.Module):
    """A motion module's place in a block whose module is never run: the block's hidden states pass unchanged.

    Hallo's train-mode inference with checkpointing runs only the resnets of its attention-free down and up blocks
    (hallo/models/unet_3d_blocks.py:905-916,1376-1388); their weights stay in the converted file under
    ``skipped.`` (convert/hallo.py) for training. Parameter-free, so the model's state dict has no names there."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


def prefix_frames_from_bank(bank: torch.Tensor, videos: int, height: int, width: int) -> torch.Tensor:
    """Hallo's motion frames from one layer's reference bank.

    ``bank`` ``((b (1+n)), h*w, c)``: per video the reference row, then the n motion-frame rows (the reference
    UNet's ``norm1`` output, hallo/models/mutual_self_attention.py:248-252 takes rows 1: of each video).
    Returns ``((b n), c, h, w)`` for ``with_motion_prefix``. Hallo splits the tokens with the width as the first
    factor (unet_3d_blocks.py:448-452), which equals the tokens' row-major (h, w) order only on the square latents
    it runs; here they are split row-major, as they were flattened."""
    rows = rearrange(bank, "(b s) (h w) c -> b s c h w", b=videos, h=height, w=width)
    return rearrange(rows[:, 1:], "b n c h w -> (b n) c h w")
