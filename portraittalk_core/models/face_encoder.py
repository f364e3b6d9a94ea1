"""A small face encoder for models that do not use insightface's ArcFace (tiny tests, the demo).

It maps an aligned face crop to an L2-normalised embedding of the same width as ArcFace's, so the
rest of the model does not care which encoder produced it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FaceEncoder(nn.Module):
    def __init__(self, embed_dim: int = 512, input_size: int = 112, width: int = 32):
        super().__init__()
        self.input_size = input_size
        chans = [3, width, width * 2, width * 4, width * 4]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], embed_dim)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) aligned crops in [-1, 1] -> (N, embed_dim) unit vectors."""
        faces = F.interpolate(faces, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        pooled = self.features(faces).mean(dim=(2, 3))
        return F.normalize(self.head(pooled), dim=-1)
