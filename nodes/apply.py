"""Apply PortraitTalk: a patched MODEL plus conditioning and an empty latent for the stock KSampler (one clip).

For graphs that want ComfyUI's own KSampler (or KSamplerAdvanced, custom sigmas, ...) rather than
PortraitTalk Sampler: one clip of the audio, ordinary two-branch guidance (positive = prompt with
identity and audio, negative = neither).
"""

from comfy_api.latest import io

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core.comfyui.model import one_clip_model
from ..portraittalk_core.generation.settings import GenerationSettings

from .inputs import setting_input, setting_value, strength_inputs
from .types import AudioFeatures, IdentityRefs, PortraitTalk


class ApplyPortraitTalk(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkApply",
            display_name="Apply PortraitTalk",
            category="PortraitTalk",
            description="Patches your MODEL with PortraitTalk for one clip of the audio and returns it with an "
                        "empty LATENT of that clip's frames, for the stock KSampler. Long audio needs PortraitTalk "
                        "Sampler, which chains clips.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5-family MODEL."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE (encodes the references)."),
                io.Conditioning.Input("positive", tooltip="The prompt; the references are read with it."),
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader."),
                IdentityRefs.Input("refs", tooltip="From PortraitTalk Load Identity Refs."),
                AudioFeatures.Input("audio_features", tooltip="From PortraitTalk Audio Encode."),
                io.Int.Input("start_frame", default=0, min=0, max=1_000_000, tooltip="First frame of the clip."),
                io.Int.Input("frames", default=16, min=1, max=32, tooltip="Frames in the clip (AnimateDiff: <= 32)."),
                *strength_inputs(),
                setting_input("region"),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The patched MODEL."),
                io.Latent.Output(display_name="latent", tooltip="One latent per frame of the clip: empty, or for "
                                                                 "region mouth the photo's with a noise mask."),
            ],
        )

    @classmethod
    def execute(cls, model, vae, positive, portraittalk, refs, audio_features, start_frame=0, frames=16,
                **inputs) -> io.NodeOutput:
        check_finite(**inputs)
        settings = GenerationSettings(**{name: setting_value(name, value) for name, value in inputs.items()})
        return io.NodeOutput(*one_clip_model(model, vae, positive, portraittalk, refs, audio_features, start_frame,
                                             frames, settings))
