"""Per-frame audio windows -> audio tokens from the whole window flattened (Hallo's audio projection).

Beside ``AudioProjection``, which mixes the encoder's layers by learnt weights first: here every value of a
frame's window (positions x layers x channels) feeds a three-layer ReLU MLP, whose output is cut into M
tokens and layer-normalised. This is the layout of Hallo's released weights (``audioproj.*``).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class FlatAudioProjection(nn.Module):
    """Audio windows ``(frames, 2*window+1, layers, C)`` -> ``(frames, M, D)``."""

    def __init__(self, num_layers: int, feature_dim: int, window: int, cross_attention_dim: int,
                 num_tokens: int, hidden_dim: int):
        super().__init__()
        self.num_tokens = num_tokens
        flat_dim = (2 * window + 1) * num_layers * feature_dim
        self.mlp = nn.Sequential(
            nn.Linear(flat_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, cross_attention_dim * num_tokens),
        )
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        # Window position slowest, channel fastest: the order their weights were trained on
        # (hallo/models/audio_proj.py:108-110, a row-major view of (frames, window, blocks, channels)).
        tokens = self.mlp(rearrange(windows, "f w l c -> f (w l c)"))
        # Token-major split, as their reshape to (frames, tokens, dim) at audio_proj.py:115-117.
        return self.norm(rearrange(tokens, "f (m d) -> f m d", m=self.num_tokens))
