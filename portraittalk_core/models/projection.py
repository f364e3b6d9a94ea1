"""Projections of face and audio features into tokens of the text-embedding width."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class IdentityProjection(nn.Module):
    """Face embedding(s) -> K identity tokens each (IP-Adapter's image projection).

    References of one identity are projected one by one and their tokens concatenated, so the
    decoupled cross-attention attends over all references at once.

    With one reference this is Hallo's image projection as it stands (hallo/models/image_proj.py:51-54,72-75:
    the same names, the Linear's output split token-major, LayerNorm at eps 1e-5), so their ``imageproj.*``
    weights load unchanged; keep the ``(k d)`` split, their tokens depend on it.
    """

    def __init__(self, embed_dim: int, cross_attention_dim: int, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.proj = nn.Linear(embed_dim, cross_attention_dim * num_tokens)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(videos, refs, embed_dim) -> (videos, refs * K, D)."""
        tokens = rearrange(self.proj(embeddings), "b r (k d) -> b (r k) d", k=self.num_tokens)
        return self.norm(tokens)


class AudioProjection(nn.Module):
    """Per-frame audio feature windows -> M audio tokens per frame.

    The encoder's layers are mixed by learnt softmax weights (wav2vec2's layers carry phonetic and
    prosodic information at different depths), then the window of neighbouring frames is flattened
    and mapped through a small MLP.
    """

    def __init__(self, num_layers: int, feature_dim: int, window: int, cross_attention_dim: int,
                 num_tokens: int, hidden_dim: int | None = None):
        super().__init__()
        self.num_tokens = num_tokens
        width = 2 * window + 1
        hidden_dim = hidden_dim or max(4 * cross_attention_dim, 64)
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))
        self.mlp = nn.Sequential(
            nn.Linear(width * feature_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, cross_attention_dim * num_tokens),
        )
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(frames, window, layers, C) -> (frames, M, D)."""
        weights = self.layer_weights.softmax(0).to(windows.dtype)
        mixed = torch.einsum("fwlc,l->fwc", windows, weights)
        tokens = self.mlp(rearrange(mixed, "f w c -> f (w c)"))
        return self.norm(rearrange(tokens, "f (m d) -> f m d", m=self.num_tokens))
