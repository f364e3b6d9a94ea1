"""PortraitTalk Sampler: the user's MODEL, patched, sampled clip by clip with ComfyUI's own samplers
(portraittalk_core/comfyui/sampling.py)."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core.comfyui.sampling import sample_talking_face
from ..portraittalk_core.generation.settings import GenerationSettings

from .inputs import setting_input, setting_value, strength_inputs
from .types import AudioFeatures, HeadMotion, IdentityRefs, PortraitTalk

# The Sampler's generation settings, in its inputs' order (strength_inputs between the scales and the clips).
SCALES = ["text_scale", "identity_scale", "audio_scale"]
CLIPS = ["clip_frames", "motion_frames", "region", "denoise"]


class PortraitTalkSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkSampler",
            display_name="PortraitTalk Sampler",
            category="PortraitTalk",
            description="Generates the talking-face frames: patches your MODEL with PortraitTalk (identity, audio, "
                        "temporal and structure modules), then samples the audio's length in clips, each continuing "
                        "from the last frames of the one before, with ComfyUI's samplers and schedulers.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5-family MODEL from your checkpoint loader (LoRAs welcome)."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE: encodes the references, decodes the frames."),
                io.Conditioning.Input("positive", tooltip="The prompt (CLIP Text Encode): text customisation."),
                io.Conditioning.Input("negative", tooltip="The negative prompt; also the unconditional branch."),
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader."),
                IdentityRefs.Input("refs", tooltip="From PortraitTalk Load Identity Refs."),
                AudioFeatures.Input("audio_features", tooltip="From PortraitTalk Audio Encode."),
                setting_input("seed", control_after_generate=True),
                setting_input("steps"),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="ddim",
                               tooltip="ComfyUI sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="ComfyUI noise schedule."),
                *[setting_input(name) for name in SCALES],
                *strength_inputs(),
                *[setting_input(name) for name in CLIPS],
                setting_input("paste_photo"),
                HeadMotion.Input("head_motion", optional=True,
                                 tooltip="From PortraitTalk Head Motion: the photo moves as the driving video's head "
                                         "does (played back and forth if shorter than the audio); or from "
                                         "PortraitTalk Head Motion From Speech: as the model predicts from the "
                                         "audio. Unconnected: the photo stays where it is."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The frames, an IMAGE batch."),
                io.Float.Output(display_name="fps", tooltip="Their frame rate (from Audio Encode)."),
            ],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, portraittalk, refs, audio_features, sampler_name="ddim",
                scheduler="normal", head_motion=None, **inputs) -> io.NodeOutput:
        check_finite(**inputs)
        settings = GenerationSettings(**{name: setting_value(name, value) for name, value in inputs.items()})
        frames = sample_talking_face(model, vae, positive, negative, portraittalk, refs, audio_features, settings,
                                     sampler_name, scheduler, head_motion)
        return io.NodeOutput(frames, float(audio_features.fps))
