"""Evaluation: weight-free metrics (SSIM, PSNR, LMD, flicker, lip-sync correlation) and ADFD."""

from .adfd import ADFD, adfd
from .metrics import flicker, landmark_distance, lip_sync_correlation, psnr, ssim

__all__ = ["ADFD", "adfd", "flicker", "landmark_distance", "lip_sync_correlation", "psnr", "ssim"]
