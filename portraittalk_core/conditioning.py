"""From the user's inputs to what the networks condition on: audio features, aligned references.

Shared by the diffusers pipeline and the ComfyUI nodes, so both hosts see the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import audio as audio_io
from . import face as face_io
from .config import PortraitTalkConfig
from .errors import WeightsError


@dataclass
class References:
    faces: list                        # face.AlignedFace, one per photo
    pixels: torch.Tensor               # (R, 3, H, W) in [-1, 1]
    structure: torch.Tensor            # (1, 4, H, W) head placement mask + landmark map, mouth left free
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
    first = faces[0]
    # The mouth is left out of the landmark map: its shape is the audio's to decide.
    landmark_map = face_io.rasterize_landmarks(first.landmarks, first.regions, resolution,
                                               include=("outline", "brows", "eyes", "nose"))
    structure = torch.cat([torch.from_numpy(first.head_mask)[None], torch.from_numpy(landmark_map)])[None]
    return References(faces, pixels, structure.float(), embed_faces(faces, pixels, model))


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
