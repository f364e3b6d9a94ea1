"""PortraitTalk Loader: PortraitTalk weights from models/portraittalk, plus its face and audio front ends."""

import os

import comfy.model_management
import comfy.model_patcher
from comfy_api.latest import io

from ..portraittalk_core.errors import WeightsError
from ..portraittalk_core.face import InsightFaceDetector, MediaPipeDetector
from ..portraittalk_core.audio import LogMelFrontEnd, Wav2Vec2FrontEnd
from ..portraittalk_core.conditioning import own_backbone_probe
from ..portraittalk_core.weights import load_model

from . import folders
from .types import PortraitTalk

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


def _detector(choice: str):
    root = folders.folder("insightface")
    if choice == "mediapipe":
        return MediaPipeDetector()
    if choice.startswith("insightface"):
        return InsightFaceDetector(root, choice.split()[1])
    from ..portraittalk_core.face import default_detector
    return default_detector(root if os.path.isdir(root) else None)


def _audio_front_end(config, choice: str):
    if config.audio_front_end == "logmel":
        return LogMelFrontEnd(n_mels=config.audio_dim)
    if choice == "auto":
        raise WeightsError("this PortraitTalk model needs a wav2vec2 audio encoder and none was chosen",
                           f"put a wav2vec2 folder (config.json, model.safetensors) in "
                           f"'{folders.folder('audio_encoders')}' and pick it in 'audio_encoder'")
    return Wav2Vec2FrontEnd(os.path.join(folders.folder("audio_encoders"), choice))


class PortraitTalkLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkLoader",
            display_name="PortraitTalk Loader",
            category="PortraitTalk",
            description="Loads PortraitTalk weights (IdentityNet, AnimateNet modules, projections) from "
                        "models/portraittalk, with the face detector and audio encoder they use. The Stable "
                        "Diffusion 1.5 backbone comes from your own checkpoint loader.",
            inputs=[
                io.Combo.Input("weights", options=folders.portraittalk_files(),
                               tooltip="A PortraitTalk .safetensors file in models/portraittalk, or the "
                                       "embedded demo model (portraittalk_demo.safetensors) shipped with the pack."),
                io.Combo.Input("face_detector", options=FACE_DETECTORS, default="auto",
                               tooltip="auto: insightface from models/insightface when present, else mediapipe. "
                                       "Models trained with ArcFace need insightface."),
                io.Combo.Input("audio_encoder", options=["auto", *folders.audio_encoder_folders()], default="auto",
                               tooltip="wav2vec2 folder in models/audio_encoders, for models that use wav2vec2; "
                                       "auto for models with the built-in log-mel front end."),
            ],
            outputs=[PortraitTalk.Output(display_name="portraittalk", tooltip="The loaded PortraitTalk model.")],
        )

    @classmethod
    def execute(cls, weights, face_detector="auto", audio_encoder="auto") -> io.NodeOutput:
        path = folders.full_path("portraittalk", weights)
        model = load_model(path)
        bundle = PortraitTalkBundle(model, _detector(face_detector), _audio_front_end(model.config, audio_encoder),
                                    weights, own_backbone_probe(path))
        return io.NodeOutput(bundle)
