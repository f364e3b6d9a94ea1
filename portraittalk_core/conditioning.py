"""From the user's inputs to what the networks condition on: audio features, aligned references.

Shared by the diffusers pipeline and the ComfyUI nodes, so both hosts see the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from . import audio as audio_io
from . import face as face_io
from .config import PortraitTalkConfig
from .errors import WeightsError


@dataclass
class References:
    faces: list                        # face.AlignedFace, one per photo
    pixels: torch.Tensor               # (R, 3, H, W) in [-1, 1]
    structure: torch.Tensor            # (1, 4, H, W) structure_maps of the first reference
    embeddings: torch.Tensor           # (R, E) face embeddings


def load_checked_audio(source, fps: float) -> audio_io.Waveform:
    """Any audio source -> 16 kHz mono waveform with sound in it, at least one frame at ``fps`` long."""
    if isinstance(source, tuple):  # (samples, sample_rate)
        wave = audio_io.load_audio(source[0], source_rate=source[1])
    else:
        wave = audio_io.load_audio(source)
    audio_io.check_not_silent(wave)
    audio_io.check_long_enough(wave, fps)
    return wave


def prepare_audio(source, front_end, config: PortraitTalkConfig, fps: float
                  ) -> tuple[audio_io.Waveform, audio_io.AudioFeatures]:
    """Any audio source -> checked 16 kHz mono waveform and per-frame feature windows at ``fps``."""
    wave = load_checked_audio(source, fps)
    features = audio_io.encode_audio(wave, front_end, fps, window=config.audio_window)
    check_audio_features(features, config)
    return wave, features


def check_audio_features(features: audio_io.AudioFeatures, config: PortraitTalkConfig) -> None:
    layers, dim = features.frames.shape[-2:]
    if (layers, dim) != (config.audio_layers, config.audio_dim):
        raise WeightsError(f"the audio features have {layers} layers x {dim} channels but the model expects "
                           f"{config.audio_layers} x {config.audio_dim}",
                           "use the audio encoder the model was trained with")


def prepare_references(images: Sequence, model, detector, resolution: int, labels=None) -> References:
    """Photos -> aligned faces at ``resolution``, their embeddings, and the first one's structure maps."""
    faces = face_io.prepare_references(images, size=resolution, detector=detector, labels=labels,
                                       face_fraction=model.config.face_fraction)
    pixels = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1) for f in faces]).float() / 127.5 - 1
    structure = faces_structure(faces[:1])
    return References(faces, pixels, torch.from_numpy(structure), embed_faces(faces, pixels, model))


def mouth_boxes(landmarks: np.ndarray, mouth: np.ndarray, size: int, margin: float = 0.25) -> np.ndarray:
    """(F, 1, S, S) float masks, 1 inside each frame's mouth box (the mouth landmarks' bounds, grown by
    ``margin`` of their size on every side)."""
    masks = np.zeros((len(landmarks), 1, size, size), np.float32)
    for mask, points in zip(masks, landmarks[:, mouth]):
        low, high = points.min(0), points.max(0)
        pad = margin * (high - low) + 1
        (x0, y0), (x1, y1) = np.floor(low - pad).astype(int).clip(0, size), np.ceil(high + pad).astype(int).clip(0, size)
        mask[0, y0:y1, x0:x1] = 1.0
    return masks


# Region="mouth" generation redraws the mouth box grown by this share of its size on every side: an open jaw
# moves the lips well past the closed mouth's bounds.
MOUTH_REGION_MARGIN = 0.6


def structure_maps(head_mask: np.ndarray, landmarks: np.ndarray, regions: dict) -> np.ndarray:
    """What AnimateNet's structure encoder reads, (4, S, S) float32 in [0, 1]: the head placement mask and the
    landmark map without the mouth (its shape is the audio's to decide). Training and inference both call this."""
    size = head_mask.shape[-1]
    landmark_map = face_io.rasterize_landmarks(landmarks, regions, size, include=("outline", "brows", "eyes", "nose"))
    return np.concatenate([head_mask[None].astype(np.float32), landmark_map.astype(np.float32)])


def faces_structure(faces) -> np.ndarray:
    """(F, 4, S, S) ``structure_maps`` of aligned faces (face.AlignedFace), one a face."""
    return np.stack([structure_maps(f.head_mask, f.landmarks, f.regions) for f in faces])


def embed_faces(faces, pixels: torch.Tensor, model) -> torch.Tensor:
    """Face embeddings: the model's builtin encoder, or the ArcFace embeddings insightface gave."""
    if model.face_encoder is not None:
        weight = next(model.face_encoder.parameters())  # wherever the host put it (ComfyUI may have moved it)
        with torch.inference_mode():
            return model.face_encoder(pixels.to(weight.device, weight.dtype)).float().cpu()
    if any(f.embedding is None for f in faces):
        raise WeightsError("this model needs ArcFace embeddings, which the current face detector does not give "
                           "(insightface models not found)",
                           "put insightface's antelopev2 models in models/insightface/models/antelopev2 and use them "
                           "(--insightface with the models/insightface folder, or the loader's face_detector)")
    return torch.stack([torch.as_tensor(f.embedding) for f in faces]).float()
