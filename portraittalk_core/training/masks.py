"""Random corruption masks for stage 1's mask reconstruction: rectangles and blobs over the frames.

A mask is 1 where the frame is corrupted. Rectangles cover whole regions (a mouth, an eye, the hair);
blobs are thresholded smooth noise, irregular like occlusions. Both are drawn from a torch Generator, so
a seed gives the same masks on any machine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_rectangles(generator: torch.Generator, size: int, count: int, min_side: float = 0.1,
                      max_side: float = 0.5) -> torch.Tensor:
    """(size, size) mask: the union of ``count`` axis-aligned rectangles with sides in [min, max] of the frame."""
    mask = torch.zeros(size, size)
    for _ in range(count):
        h, w = ((min_side + (max_side - min_side) * torch.rand(2, generator=generator)) * size).long().clamp(min=1)
        top = int(torch.randint(0, size - int(h) + 1, (1,), generator=generator))
        left = int(torch.randint(0, size - int(w) + 1, (1,), generator=generator))
        mask[top:top + h, left:left + w] = 1.0
    return mask


def random_blobs(generator: torch.Generator, size: int, coverage: float = 0.25, smoothness: int = 8) -> torch.Tensor:
    """(size, size) mask of irregular blobs covering about ``coverage`` of the frame: coarse noise, upsampled
    smoothly, thresholded at its (1 - coverage) quantile."""
    coarse = torch.randn(1, 1, smoothness, smoothness, generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0]
    return (smooth > torch.quantile(smooth.flatten(), 1.0 - coverage)).float()


def random_masks(generator: torch.Generator, batch: int, size: int, max_rectangles: int = 3,
                 blob_probability: float = 0.5, max_coverage: float = 0.6) -> torch.Tensor:
    """(batch, 1, size, size) corruption masks: 1-``max_rectangles`` rectangles, plus blobs half of the time.
    Masks covering more than ``max_coverage`` are redrawn smaller, so some of every frame stays visible."""
    masks = []
    for _ in range(batch):
        while True:
            count = int(torch.randint(1, max_rectangles + 1, (1,), generator=generator))
            mask = random_rectangles(generator, size, count)
            if float(torch.rand(1, generator=generator)) < blob_probability:
                coverage = 0.1 + 0.2 * float(torch.rand(1, generator=generator))
                mask = torch.maximum(mask, random_blobs(generator, size, coverage))
            if mask.mean() <= max_coverage:
                break
        masks.append(mask)
    return torch.stack(masks)[:, None]


def latent_mask(mask: torch.Tensor, latent_size: int) -> torch.Tensor:
    """Pixel mask -> latent resolution: a latent cell counts as corrupted if any of its pixels is."""
    return F.adaptive_max_pool2d(mask, latent_size)
