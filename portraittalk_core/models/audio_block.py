"""RegionAudioBlock: Hallo's audio module, a transformer block that paints speech into three face regions.

Hallo puts one after every spatial transformer of its denoiser, before the motion module (issue 26;
hallo/models/unet_3d_blocks.py:724-733). Beside PortraitTalk's decoupled audio cross-attention (an extra branch of
``attn2``), this is a separate residual block of its own, with three cross-attentions over the frame's audio tokens:
one for the whole picture, one for the face, one for the lips, each multiplied by its region mask and passed through
its own 1x1 convolution before they are summed with per-region weights.

The order of operations (hallo/models/transformer_3d.py:180-253, hallo/models/attention.py:812-905):
GroupNorm per frame, 1x1 ``proj_in`` to the inner width (which may differ from ``in_channels``: 320 inside the
640-wide blocks of their full-size model); ``norm1`` -> self-attention + residual; ``norm2`` -> the three region
cross-attentions, each ``x mask`` -> 1x1 conv, then ``w_full*full + w_face*face + w_lip*lip + residual``; ``norm3``
-> GEGLU feed-forward + residual; 1x1 ``proj_out`` back to ``in_channels`` plus the block's input.
The names are ours; ``convert/hallo_keys.py`` maps theirs (``attn2_0/1/2``, ``zero_conv_full/face/lip``) onto them.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn

REGIONS = ("full", "face", "lip")


def region_audio_widths(block: str, index: int, channels: tuple[int, ...]) -> tuple[int, int]:
    """(in_channels, inner width) of the audio block after ``block``.attentions.``index`` of a UNet with
    ``channels`` per level (diffusers' block names). Hallo builds each from the constructor arguments it has at
    hand: in a down block the inner width is the resnet input of the same layer (hallo/models/unet_3d_blocks.py:
    552,586-590), in an up block the block's input width (1048-1052), in the mid block its width (357-361)."""
    part, _, level = block.partition(".")
    if part == "mid_block":
        return channels[-1], channels[-1]
    level = int(level)
    if part == "down_blocks":
        return channels[level], channels[max(level - 1, 0)] if index == 0 else channels[level]
    up = channels[::-1]
    return up[level], up[min(level + 1, len(up) - 1)]


def mask_level(block: str, levels: int) -> int:
    """Which level of the region masks the audio blocks of ``block`` read: its depth, down i -> i, mid -> the
    deepest, up i -> levels-1-i (hallo/models/unet_3d.py:250,279,338; attention.py:853)."""
    part, _, level = block.partition(".")
    if part == "mid_block":
        return levels - 1
    return int(level) if part == "down_blocks" else levels - 1 - int(level)


class RegionAudioBlock(nn.Module):
    """``((b f), c, h, w)`` latents and ``((b f), M, D)`` audio tokens -> ``((b f), c, h, w)``."""

    def __init__(self, in_channels: int, num_attention_heads: int, attention_head_dim: int,
                 cross_attention_dim: int, norm_num_groups: int = 32):
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6)
        self.proj_in = nn.Conv2d(in_channels, inner, kernel_size=1)
        self.norm1 = nn.LayerNorm(inner)
        self.attn1 = Attention(inner, heads=num_attention_heads, dim_head=attention_head_dim)
        self.norm2 = nn.LayerNorm(inner)
        self.attn2 = nn.ModuleDict({
            region: Attention(inner, cross_attention_dim=cross_attention_dim, heads=num_attention_heads,
                              dim_head=attention_head_dim)
            for region in REGIONS})
        # Per-pixel channel mixing of each masked region; a 1x1 convolution (not a Linear) so that the converted
        # weights keep their (out, in, 1, 1) shape.
        self.region_out = nn.ModuleDict({region: nn.Conv2d(inner, inner, kernel_size=1) for region in REGIONS})
        self.norm3 = nn.LayerNorm(inner)
        self.ff = FeedForward(inner, activation_fn="geglu")
        self.proj_out = nn.Conv2d(inner, in_channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor, audio_tokens: torch.Tensor,
                masks: dict[str, torch.Tensor], region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
                ) -> torch.Tensor:
        """``masks``: for each of ``REGIONS``, this block's level of the mask, ``((b f), h*w)`` or
        ``((b f), h, w)``, in [0, 1]. ``region_weights``: (full, face, lip), Hallo's ``motion_scale``
        (pose, face, lip weights, configs/inference/default.yaml:42-44)."""
        height, width = hidden_states.shape[-2:]
        tokens = rearrange(self.proj_in(self.norm(hidden_states)), "b c h w -> b (h w) c")
        tokens = self.attn1(self.norm1(tokens)) + tokens
        normed = self.norm2(tokens)
        full, face, lip = (
            weight * self._masked_region(region, normed, audio_tokens, masks[region], height, width)
            for region, weight in zip(REGIONS, region_weights))
        # Summed in Hallo's order, the regions first and the residual last (attention.py:885-897).
        tokens = full + face + lip + tokens
        tokens = self.ff(self.norm3(tokens)) + tokens
        return self.proj_out(rearrange(tokens, "b (h w) c -> b c h w", h=height)) + hidden_states

    def _masked_region(self, region: str, normed: torch.Tensor, audio_tokens: torch.Tensor, mask: torch.Tensor,
                       height: int, width: int) -> torch.Tensor:
        mask = mask.reshape(mask.shape[0], height * width, 1).to(normed.dtype)
        attended = self.attn2[region](normed, encoder_hidden_states=audio_tokens) * mask
        grid = self.region_out[region](rearrange(attended, "b (h w) c -> b c h w", h=height))
        return rearrange(grid, "b c h w -> b (h w) c")
