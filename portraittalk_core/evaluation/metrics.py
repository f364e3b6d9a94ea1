"""Weight-free video metrics. Frames are float arrays in [0, 1], (F, H, W, 3); landmarks (F, N, 2)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .adfd import STILL


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) over frames and
    channels; with ``mask`` (H, W) in {0, 1}, the mean over the masked pixels only."""
    x = torch.from_numpy(np.asarray(a, np.float64)).permute(0, 3, 1, 2).flatten(0, 1)[:, None]
    y = torch.from_numpy(np.asarray(b, np.float64)).permute(0, 3, 1, 2).flatten(0, 1)[:, None]
    w = _gaussian_window()
    mu_x, mu_y = F.conv2d(x, w, padding=5), F.conv2d(y, w, padding=5)
    var_x = F.conv2d(x * x, w, padding=5) - mu_x ** 2
    var_y = F.conv2d(y * y, w, padding=5) - mu_y ** 2
    cov = F.conv2d(x * y, w, padding=5) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    if mask is None:
        return float(s.mean())
    m = torch.from_numpy(np.asarray(mask, np.float64))[None, None]
    return float((s * m).sum() / (m.sum() * s.shape[0]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def landmark_distance(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """LMD: mean Euclidean distance between corresponding landmarks, in units of ``scale`` (e.g. the
    inter-ocular distance)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).mean() / scale)


def flicker(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames (compare a video's against its ground truth's)."""
    frames = np.asarray(frames, np.float64)
    return float(np.abs(np.diff(frames, axis=0)).mean()) if len(frames) > 1 else 0.0


def lip_sync_correlation(aperture: np.ndarray, ground_truth: np.ndarray) -> float:
    """Pearson correlation of the generated mouth aperture with the ground-truth aperture (inter-ocular units), per
    frame; 0 for a mouth that does not move beyond rounding (adfd.STILL)."""
    a, b = np.asarray(aperture, np.float64), np.asarray(ground_truth, np.float64)
    if a.std() < STILL:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0
