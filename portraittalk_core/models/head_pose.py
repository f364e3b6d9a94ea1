"""SpeechHeadMotion: the head's movement predicted from the speech alone.

People's heads move with their prosody: they sink on loud stretches and turn and tilt as the voice brightens or
darkens. Without a driving video (head_motion.py), this network says where the photo's head goes, frame by frame,
from the same audio features the mouth follows.

Per frame it predicts the head's placement as an affine offset ``P_i`` (2, 3): the head sits at ``A_i = I + P_i``,
in crop coordinates where the crop's side is 1. Only movement counts, never where the photo's head already is, so
what it is trained on and what generation uses is the movement since the first frame (``movement_since_first``):

    M_i = A_i A_0^-1

taking the first frame's head onto frame i's, as a driving video's motion is measured (head_motion.py). Dilated
1-D convolutions over time see about 2.4 s of speech around each frame: the movement follows the voice's slow
contour, not single syllables. The normalisations are over the whole clip, not per frame: how loud a stretch is
against the rest of the clip is what the head follows.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

DILATIONS = (1, 2, 4, 8)  # kernel 5: a receptive field of 1 + 4 * 15 = 61 frames
DROPOUT = 0.1


class SpeechHeadMotion(nn.Module):
    def __init__(self, num_layers: int, feature_dim: int, channels: int):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))
        self.norm = nn.GroupNorm(1, feature_dim)
        self.proj_in = nn.Conv1d(feature_dim, channels, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(1, channels), nn.SiLU(), nn.Dropout(DROPOUT),
                          nn.Conv1d(channels, channels, 5, dilation=d, padding=2 * d, padding_mode="replicate"))
            for d in DILATIONS)
        self.proj_out = nn.Conv1d(channels, 6, 1)
        # Starts at no movement at all: an untrained module leaves the photo where it is.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(videos, frames, layers, C) per-frame audio features -> (videos, frames, 2, 3) placement offsets P."""
        weights = self.layer_weights.softmax(0).to(features.dtype)
        x = torch.einsum("vflc,l->vcf", features, weights)
        x = self.proj_in(self.norm(x))
        for block in self.blocks:
            x = x + block(x)
        return rearrange(self.proj_out(x), "v (r c) f -> v f r c", r=2)


def movement_since_first(offsets: torch.Tensor) -> torch.Tensor:
    """(..., F, 2, 3) placement offsets P -> (..., F, 2, 3) movements M_i = A_i A_0^-1, A = I + P."""
    placement = _homogeneous(offsets + torch.eye(2, 3, dtype=offsets.dtype, device=offsets.device))
    movement = placement @ torch.linalg.inv(placement[..., :1, :, :])
    return movement[..., :2, :]


def _homogeneous(affine: torch.Tensor) -> torch.Tensor:
    """(..., 2, 3) -> (..., 3, 3) with the row (0, 0, 1) below."""
    row = torch.zeros(affine.shape[:-2] + (1, 3), dtype=affine.dtype, device=affine.device)
    row[..., 0, 2] = 1.0
    return torch.cat([affine, row], dim=-2)
