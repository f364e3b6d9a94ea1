"""Measuring one clip: every per-clip figure of generated frames against the shard's ground truth."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..audio import SAMPLE_RATE
from ..conditioning import mouth_boxes
from ..data.shards import Shard
from .adfd import adfd, face_scale, mouth_opening
from .metrics import flicker, landmark_distance, lip_sync_correlation, psnr, ssim


def face_outside_mouth(shard: Shard, landmarks: np.ndarray) -> np.ndarray:
    """(S, S) mask: the head placement mask without the union of every frame's mouth box."""
    size = shard.arrays["frames"].shape[1]
    mouth = mouth_boxes(landmarks, np.asarray(shard.meta["regions"]["mouth"]), size).max(0)[0]
    return shard.arrays["head_masks"].astype(np.float64) * (1 - mouth)


def clip_metrics(generated: np.ndarray, shard: Shard, regressor) -> dict:
    """Every per-clip figure for uint8 ``generated`` (F, S, S, 3) against the shard's ground truth."""
    n = min(len(generated), int(shard.meta["n_frames"]))
    made, real = generated[:n], shard.arrays["frames"][:n]
    truth = shard.arrays["landmarks"][:n]
    regions = {k: np.asarray(v) for k, v in shard.meta["regions"].items()}
    mouth = regions["mouth"]
    measured = regressor.landmarks(made)
    opening, true_opening = mouth_opening(measured, regions), mouth_opening(truth, regions)
    scale = face_scale(truth, regions)
    mask = face_outside_mouth(shard, truth)
    samples, fps = shard.arrays["audio"].astype(np.float32), float(shard.meta["fps"])
    return {
        "lip_sync": lip_sync_correlation(opening, true_opening),
        "identity_ssim": ssim(made / 255.0, real / 255.0, mask),
        "psnr": psnr(made / 255.0, real / 255.0),
        "flicker": flicker(made / 255.0),
        "flicker_ground_truth": flicker(real / 255.0),
        "lmd": landmark_distance(measured, truth, scale),
        "lmd_mouth": landmark_distance(measured[:, mouth], truth[:, mouth], scale),
        "adfd": asdict(adfd(measured, regions, samples, SAMPLE_RATE, fps, ground_truth_opening=true_opening)),
    }
