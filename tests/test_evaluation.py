"""Metrics and ADFD; ADFD must rank in sync > shifted by 0.5 s > still face > jittered face on one clip."""

from __future__ import annotations

import numpy as np
import pytest

from portraittalk_core.evaluation import adfd, flicker, landmark_distance, lip_sync_correlation, psnr, ssim
from portraittalk_core.evaluation.adfd import envelope

RATE, FPS, SECONDS = 16_000, 25.0, 6.0
N = int(SECONDS * FPS)
REGIONS = {"outline": np.arange(0, 6), "brows": np.arange(6, 8), "eyes": np.arange(8, 12),
           "nose": np.arange(12, 14), "mouth": np.arange(14, 18)}


def speech() -> np.ndarray:
    """Syllable-rate bursts with pauses, like speech: the envelope drives the mouth below."""
    t = np.arange(int(SECONDS * RATE)) / RATE
    rng = np.random.default_rng(0)
    bursts = np.zeros_like(t)
    start = 0.3
    while start < SECONDS - 0.5:
        length = rng.uniform(0.12, 0.3)
        bursts += np.exp(-0.5 * ((t - start - length / 2) / (length / 3)) ** 2)
        start += length + rng.uniform(0.05, 0.6)
    return (0.4 * bursts * np.sin(2 * np.pi * 160 * t)).astype(np.float32)


def face(opening: np.ndarray, seed: int = 1) -> np.ndarray:
    """(F, 18, 2) landmarks: a static face with a slow small sway, mouth opening as given (pixels ~ 64 px IOD)."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([
        np.stack([np.linspace(40, 160, 6), [150, 175, 190, 190, 175, 150]], 1),      # outline
        [[70, 60], [130, 60]],                                                           # brows
        [[60, 80], [80, 80], [120, 80], [140, 80]],                                      # eyes (left pair, right pair)
        [[100, 100], [100, 115]],                                                        # nose
        [[85, 140], [115, 140], [100, 140], [100, 140]],                                 # mouth: corners, top, bottom
    ]).astype(np.float64)
    sway = 2 * np.sin(np.linspace(0, 2 * np.pi, len(opening)))[:, None, None] * np.array([1.0, 0.3])
    points = np.repeat(base[None], len(opening), 0) + sway + rng.normal(0, 0.02, (len(opening), 18, 2))
    points[:, 16, 1] -= 10 * opening
    points[:, 17, 1] += 10 * opening
    return points


@pytest.fixture(scope="module")
def clip():
    samples = speech()
    env = envelope(samples, RATE, FPS, N)
    return samples, env / env.max()


def test_adfd_ranks_sync_shift_still_jitter(clip):
    samples, opening = clip
    in_sync = adfd(face(opening), REGIONS, samples, RATE, FPS)
    shifted = adfd(face(np.roll(opening, int(0.5 * FPS))), REGIONS, samples, RATE, FPS)
    still = adfd(face(np.full(N, opening.mean())), REGIONS, samples, RATE, FPS)
    jittered_points = face(opening) + np.random.default_rng(5).normal(0, 1.5, (N, 18, 2))
    jittered = adfd(jittered_points, REGIONS, samples, RATE, FPS)
    scores = [in_sync.score, shifted.score, still.score, jittered.score]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4, scores
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert in_sync.temporal > 0.8 and shifted.temporal < 0.5 and still.temporal < 0.2 and still.activity < 0.01
    assert jittered.stability < 0.3 < in_sync.stability


def test_adfd_with_ground_truth_opening(clip):
    samples, opening = clip
    good = adfd(face(opening), REGIONS, samples, RATE, FPS, ground_truth_opening=opening)
    bad = adfd(face(opening[::-1].copy()), REGIONS, samples, RATE, FPS, ground_truth_opening=opening)
    assert good.spatial > 0.95 > bad.spatial


def test_ssim_psnr_flicker_lmd_correlation():
    rng = np.random.default_rng(0)
    a = rng.random((3, 32, 32, 3))
    assert ssim(a, a) == pytest.approx(1.0) and psnr(a, a) == float("inf")
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert ssim(a, noisy) < 0.99 and 15 < psnr(a, noisy) < 25
    from skimage.metrics import structural_similarity   # the reference implementation agrees
    reference = np.mean([structural_similarity(a[i], noisy[i], gaussian_weights=True, sigma=1.5, data_range=1.0,
                                               use_sample_covariance=False, channel_axis=-1) for i in range(3)])
    assert ssim(a, noisy) == pytest.approx(reference, abs=0.02)
    mask = np.zeros((32, 32))
    mask[:16] = 1
    half = a.copy()
    half[:, 16:] = 0                                   # only the unmasked half differs
    assert ssim(a, half, mask=mask) > ssim(a, half)
    assert flicker(np.repeat(a[:1], 4, 0)) == 0 and flicker(a) > 0.2
    points = rng.random((5, 10, 2))
    assert landmark_distance(points, points + [3, 4], scale=5.0) == pytest.approx(1.0)
    x = np.sin(np.linspace(0, 6, 50))
    assert lip_sync_correlation(x, 2 * x + 1) == pytest.approx(1.0) and lip_sync_correlation(x, -x) == pytest.approx(-1)
