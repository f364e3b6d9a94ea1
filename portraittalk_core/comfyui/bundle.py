"""A loaded PortraitTalk model as the ComfyUI nodes pass it along: the networks, under ComfyUI's memory management,
with the face detector and audio front end it was trained with. Imports ComfyUI."""

from __future__ import annotations

import os

import comfy.model_management
import comfy.model_patcher

from ..audio import LogMelFrontEnd, Wav2Vec2FrontEnd
from ..conditioning import own_backbone_probe, wav2vec2_folder_for
from ..face import InsightFaceDetector, MediaPipeDetector, default_detector
from ..weights import load_model

FACE_DETECTORS = ["auto", "insightface antelopev2", "insightface buffalo_l", "mediapipe"]


class PortraitTalkBundle:
    """What the other nodes need from a loaded model: the networks and the front ends it was trained with."""

    def __init__(self, model, detector, audio_front_end, name: str, probe=None):
        self.model, self.detector, self.audio_front_end, self.name = model, detector, audio_front_end, name
        self.probe = probe  # conditioning.own_backbone_probe: references unlike the faces a narrow model knows
        self.config = model.config
        # ComfyUI's memory management loads it to the GPU with the UNet and offloads it after.
        self.patcher = comfy.model_patcher.ModelPatcher(
            model, load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device())


def load_bundle(path: str, name: str, face_detector: str, insightface_root: str, audio_encoder: str,
                audio_encoders_root: str) -> PortraitTalkBundle:
    """The PortraitTalk weights at ``path`` with the face detector and audio encoder chosen by name (the Loader's
    inputs), looked for in ``insightface_root`` and ``audio_encoders_root``."""
    model = load_model(path)
    return PortraitTalkBundle(model, detector(face_detector, insightface_root),
                              audio_front_end(model.config, audio_encoder, audio_encoders_root), name,
                              own_backbone_probe(path))


def detector(choice: str, insightface_root: str):
    """One of ``FACE_DETECTORS``; "auto" is insightface where its models are in ``insightface_root``, else mediapipe."""
    if choice == "mediapipe":
        return MediaPipeDetector()
    if choice.startswith("insightface"):
        return InsightFaceDetector(insightface_root, choice.split()[1])
    return default_detector(insightface_root if os.path.isdir(insightface_root) else None)


def audio_front_end(config, choice: str, audio_encoders_root: str):
    """The model's own front end: log-mel, or the wav2vec2 folder ``choice`` in ``audio_encoders_root`` ("auto": the
    first there that fits the model, conditioning.wav2vec2_folder_for)."""
    if config.audio_front_end == "logmel":
        return LogMelFrontEnd(n_mels=config.audio_dim)
    if choice == "auto":
        choice = wav2vec2_folder_for(config, audio_encoders_root)
    return Wav2Vec2FrontEnd(os.path.join(audio_encoders_root, choice))
