"""PortraitTalk Loader: PortraitTalk weights from models/portraittalk, plus its face and audio front ends."""

from comfy_api.latest import io

from ..portraittalk_core.comfyui.bundle import FACE_DETECTORS, load_bundle

from . import folders
from .types import PortraitTalk


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
                               tooltip="wav2vec2 folder in models/audio_encoders, for models that use wav2vec2 "
                                       "(wav2vec2-base-960h for SD1.5-size and Hallo models). auto: the built-in "
                                       "log-mel front end, or the first folder there that fits the model."),
            ],
            outputs=[PortraitTalk.Output(display_name="portraittalk", tooltip="The loaded PortraitTalk model.")],
        )

    @classmethod
    def execute(cls, weights, face_detector="auto", audio_encoder="auto") -> io.NodeOutput:
        return io.NodeOutput(load_bundle(folders.full_path("portraittalk", weights), weights, face_detector,
                                         folders.folder("insightface"), audio_encoder,
                                         folders.folder("audio_encoders")))
