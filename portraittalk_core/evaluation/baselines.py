"""Baselines measured as the model's output is, so that its figures can be read against them: the ground truth
itself (the instrument's ceiling), through the model's own VAE (the best its outputs can look), a still face, and
the still face moved as the ground truth's head moves (``posed_still``)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..data.shards import Shard
from ..head_motion import motion_from_landmarks
from .adfd import adfd, face_scale, mouth_opening, ordering_test
from .clips import clip_metrics, face_outside_mouth
from .metrics import landmark_distance, lip_sync_correlation, ssim


def autoencoded(frames: np.ndarray, pipeline, chunk: int = 32) -> np.ndarray:
    """uint8 frames through the model's VAE and back, decoded as the pipeline decodes its outputs: the best any
    output of this model can look."""
    with torch.inference_mode():
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = torch.cat([pipeline.backbone.encode_images(pixels[i:i + chunk]) for i in range(0, len(pixels), chunk)])
    return np.concatenate([f.numpy() for f in pipeline.decode(latents, chunk)])


def posed_still(frames: np.ndarray, landmarks: np.ndarray, regions: dict) -> np.ndarray:
    """The first frame moved, frame by frame, as the head moves: the similarity transform that takes the first
    frame's brow and nose landmarks onto each frame's (head_motion.RIGID_REGIONS: the mouth, jaw and eyes move on
    their own)."""
    size = frames.shape[2], frames.shape[1]
    return np.stack([cv2.warpAffine(frames[0], transform, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for transform in motion_from_landmarks(landmarks[:len(frames)], regions)])


def baseline_metrics(shard: Shard, regressor, pipeline=None, window: int | None = None) -> dict:
    """The instrument's ceiling (the ground truth measured as the output is), a still face's figures, the still
    face moved with the ground truth's head (its identity SSIM) and, with the model's pipeline, the ground truth
    through its VAE (the ceiling of image fidelity). The still faces and the VAE round trip cover the first
    ``window`` frames (None: all), the span the model's output covers: the head drifts further from the first
    frame the longer a clip runs."""
    real = shard.arrays["frames"]
    truth = shard.arrays["landmarks"]
    regions = {k: np.asarray(v) for k, v in shard.meta["regions"].items()}
    measured = regressor.landmarks(real)
    samples, fps = shard.arrays["audio"].astype(np.float32), float(shard.meta["fps"])
    span = len(real) if window is None else min(window, len(real))
    still = clip_metrics(np.repeat(real[:1], span, 0), shard, regressor)
    posed = posed_still(real[:span], truth, regions)
    posed_identity = ssim(posed / 255.0, real[:span] / 255.0, face_outside_mouth(shard, truth[:span]))
    scores, ordered = ordering_test(truth, regions, samples, SAMPLE_RATE, fps)
    true_opening = mouth_opening(truth, regions)
    extra = {}
    if pipeline is not None:
        roundtrip = clip_metrics(autoencoded(real[:span], pipeline), shard, regressor)
        extra = {"vae_identity_ssim": roundtrip["identity_ssim"], "vae_lip_sync": roundtrip["lip_sync"]}
    return {
        **extra,
        "ceiling_lip_sync": lip_sync_correlation(mouth_opening(measured, regions), true_opening),
        "ceiling_lmd": landmark_distance(measured, truth, face_scale(truth, regions)),
        "ceiling_adfd": adfd(measured, regions, samples, SAMPLE_RATE, fps, ground_truth_opening=true_opening).score,
        "still_lip_sync": still["lip_sync"], "still_identity_ssim": still["identity_ssim"],
        "still_adfd": still["adfd"]["score"], "posed_still_identity_ssim": posed_identity,
        "ordering_scores": scores, "ordering_holds": ordered,
    }
