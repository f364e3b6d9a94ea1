"""Stage 1's masks and mask reconstruction loss."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from portraittalk_core.training.losses import mask_reconstruction_loss, mask_reconstruction_target
from portraittalk_core.training.masks import latent_mask, random_blobs, random_masks, random_rectangles


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_masks_are_deterministic_binary_and_bounded():
    a, b = random_masks(gen(3), 6, 64), random_masks(gen(3), 6, 64)
    assert torch.equal(a, b) and a.shape == (6, 1, 64, 64)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    coverage = a.mean(dim=(1, 2, 3))
    assert (coverage > 0).all() and (coverage <= 0.6).all()
    assert not torch.equal(a, random_masks(gen(4), 6, 64))


def test_rectangles_and_blobs():
    rect = random_rectangles(gen(1), 32, 1, 0.25, 0.25)
    assert rect.sum() == 8 * 8                      # one 8x8 rectangle
    blob = random_blobs(gen(2), 64, coverage=0.3)
    assert abs(float(blob.mean()) - 0.3) < 0.02


def test_latent_mask_keeps_any_corrupted_cell():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 10, 10] = 1                           # one pixel
    small = latent_mask(mask, 8)
    assert small.shape == (1, 1, 8, 8) and small.sum() == 1 and small[0, 0, 1, 1] == 1


def test_target_is_the_noise_of_the_original():
    clean, corrupted, noise = torch.randn(3, 2, 4, 8, 8).unbind(0)
    schedule = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([100, 700])
    a_t = schedule.alphas_cumprod[t]
    target = mask_reconstruction_target(noise, corrupted, clean, a_t)
    # The noised corrupted latent (as the trainer noises it) is the original noised with the target noise.
    torch.testing.assert_close(schedule.add_noise(corrupted, noise, t), schedule.add_noise(clean, target, t),
                               rtol=1e-5, atol=1e-5)
    # Nothing masked: the ordinary denoising target.
    torch.testing.assert_close(mask_reconstruction_target(noise, clean, clean, a_t), noise)


def test_loss_is_zero_at_the_target_and_weights_masked_cells():
    clean, corrupted, noise = torch.randn(3, 1, 4, 8, 8).unbind(0)
    a_t = torch.tensor([0.5])
    target = mask_reconstruction_target(noise, corrupted, clean, a_t)
    assert mask_reconstruction_loss(target, noise, corrupted, clean, a_t) == 0
    error = torch.zeros_like(target)
    error[..., 0, 0] = 1.0                          # error only in one cell
    m = torch.zeros(1, 1, 8, 8)
    plain = mask_reconstruction_loss(target + error, noise, corrupted, clean, a_t, m, masked_weight=3.0)
    m[..., 0, 0] = 1
    weighted = mask_reconstruction_loss(target + error, noise, corrupted, clean, a_t, m, masked_weight=3.0)
    torch.testing.assert_close(weighted, 3 * plain)
