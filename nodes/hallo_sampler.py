"""PortraitTalk Hallo Sampler: Hallo's converted weights on the user's MODEL, sampled clip by clip with ComfyUI's
CFG guider, samplers and schedulers (portraittalk_core/comfyui/hallo_sampling.py). No CONDITIONING inputs: the model
has no text path; the photo's face tokens are its conditioning."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core.comfyui.hallo_sampling import sample_hallo
from ..portraittalk_core.config import hallo
from ..portraittalk_core.generation.settings import GenerationSettings

from .inputs import setting_input
from .types import AudioFeatures, IdentityRefs, PortraitTalk

HALLO = hallo()   # the published model's own defaults: 40 steps, guidance 3.5


class HalloSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkHalloSampler",
            display_name="PortraitTalk Hallo Sampler",
            category="PortraitTalk",
            description="Generates talking-face frames with Hallo's published weights (converted by `portraittalk "
                        "convert hallo`): patches the denoiser MODEL with the converted modules and its noise "
                        "schedule, then samples the audio in clips, each continuing from the last frames of the one "
                        "before, with ComfyUI's CFG guider, samplers and schedulers. No prompt: the photo is the "
                        "conditioning.",
            inputs=[
                io.Model.Input("model", tooltip="Hallo's denoiser: hallo_unet.safetensors through Load Diffusion "
                                                "Model (LoRAs welcome)."),
                io.Vae.Input("vae", tooltip="sd-vae-ft-mse (Load VAE): encodes the photo and motion frames, decodes "
                                            "the frames."),
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader: portraittalk_hallo.safetensors."),
                IdentityRefs.Input("refs", tooltip="From PortraitTalk Load Identity Refs fed by the same Loader: the "
                                                   "photo, its face box, region masks and ArcFace embedding."),
                AudioFeatures.Input("audio_features", tooltip="From PortraitTalk Audio Encode fed by the same "
                                                              "Loader: the speech, padded to whole clips."),
                setting_input("seed", control_after_generate=True,
                              tooltip="Same seed, same video: clip i's noise is drawn at seed + i."),
                setting_input("steps", default=40, tooltip="Denoising steps per clip (Hallo's own: 40)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="ddim",
                               tooltip="ComfyUI sampler; ddim with the simple scheduler is Hallo's DDIM."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="ComfyUI noise schedule; simple gives Hallo's trailing timesteps."),
                setting_input("audio_scale", default=HALLO.audio_scale,
                              tooltip=f"Guidance scale (CFG) between the photo with the speech and neither: lip "
                                      f"sync and likeness (Hallo's own: {HALLO.audio_scale:g})."),
                setting_input("motion_scale"),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The frames, an IMAGE batch."),
                io.Float.Output(display_name="fps", tooltip="Their frame rate (from Audio Encode)."),
            ],
        )

    @classmethod
    def execute(cls, model, vae, portraittalk, refs, audio_features, seed=0, steps=40, sampler_name="ddim",
                scheduler="simple", audio_scale=HALLO.audio_scale, motion_scale=1.0) -> io.NodeOutput:
        check_finite(audio_scale=audio_scale, motion_scale=motion_scale)
        settings = GenerationSettings(seed=seed, steps=steps, audio_scale=audio_scale, motion_scale=motion_scale)
        frames = sample_hallo(model, vae, portraittalk, refs, audio_features, settings, sampler_name, scheduler)
        return io.NodeOutput(frames, float(audio_features.fps))
