"""A landmark regressor for measuring generated synthetic faces.

The lip-sync, LMD and ADFD figures need the 68 landmarks of *generated* frames. No pretrained landmark
detector can be downloaded here, and detectors made for photos are not made for the procedural faces, so
``portraittalk eval`` trains this small CNN on aligned crops of synthetic clips whose landmarks are exact
(the train and val splits: identities and sentences that the test split does not use), and measures with
it. Trained on the val split alone (6 identities) it learnt those faces and read the test split's mouths
badly (lip-sync ceiling 0.49); the train split's 48 identities teach it faces in general. Training sees blurred, noisy, recoloured copies of the frames, so that a soft generated frame is
measured like a sharp one. How well it measures is reported next to the results: its landmark error and
lip-sync correlation on the *ground-truth* test frames (the ceiling of every figure it gives).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from einops import rearrange
from torch import nn


class LandmarkRegressor(nn.Module):
    """(B, 3, S, S) pixels in [-1, 1] -> (B, points, 2) landmarks in units of the crop side (0..1)."""

    def __init__(self, size: int = 64, points: int = 68, width: int = 32):
        super().__init__()
        layers, channels = [], 3
        for level in range(4):  # four stride-2 stages: S -> S / 16
            out = width * 2 ** min(level, 2)
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GroupNorm(8, out), nn.SiLU(),
                       nn.Conv2d(out, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * (size // 16) ** 2, 256), nn.SiLU(),
                                  nn.Linear(256, points * 2))
        self.size, self.points = size, points

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return rearrange(self.head(self.features(pixels)), "b (n two) -> b n two", two=2) + 0.5

    @torch.no_grad()
    def landmarks(self, frames: np.ndarray, chunk: int = 256) -> np.ndarray:
        """uint8 frames (F, S, S, 3) -> landmarks (F, points, 2) in pixels."""
        self.eval()
        out = [self(_pixels(frames[i:i + chunk])).numpy() for i in range(0, len(frames), chunk)]
        return np.concatenate(out) * self.size


def _pixels(frames: np.ndarray) -> torch.Tensor:
    return rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "f h w c -> f c h w").float() / 127.5 - 1


def degrade(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random blur (sigma 0-1.5 px), noise (0-0.06) and per-channel gain/offset: what generated frames
    differ from clean renders by, so the regressor measures both alike."""
    b = pixels.shape[0]
    sigma = 1.5 * torch.rand(b, generator=generator)
    radius = 3
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-x[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)                          # (B, K)
    out = []
    for image, k in zip(pixels, kernels):  # separable blur, one kernel per image
        image = F.conv2d(F.pad(image[:, None], (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
        out.append(image[:, 0])
    blurred = torch.stack(out)
    gain = 1 + 0.1 * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)
    offset = 0.1 * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)
    noise = 0.06 * torch.rand(b, 1, 1, 1, generator=generator) * torch.randn(blurred.shape, generator=generator)
    return (blurred * gain + offset + noise).clamp(-1, 1)


def train_landmark_regressor(frames: np.ndarray, landmarks: np.ndarray, steps: int = 1500, batch_size: int = 64,
                             learning_rate: float = 1e-3, seed: int = 0) -> LandmarkRegressor:
    """Fit on uint8 crops (N, S, S, 3) with landmarks (N, points, 2) in pixels; L1 loss, AdamW, cosine decay."""
    size, points = frames.shape[1], landmarks.shape[1]
    torch.manual_seed(seed)
    model = LandmarkRegressor(size, points)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=steps)
    targets = torch.from_numpy(landmarks.astype(np.float32)) / size
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(frames), (batch_size,), generator=generator)
        pixels = degrade(_pixels(frames[index.numpy()]), generator)
        loss = (model(pixels) - targets[index]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def save_regressor(model: LandmarkRegressor, path, fingerprint: str) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"size": str(model.size), "points": str(model.points), "fingerprint": fingerprint})


def load_regressor(path, fingerprint: str) -> LandmarkRegressor | None:
    """The regressor saved at ``path`` if it was trained on the same data (``fingerprint``), else None."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("fingerprint") != fingerprint:
            return None
        model = LandmarkRegressor(int(meta["size"]), int(meta["points"]))
        model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    return model.eval()
