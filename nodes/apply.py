"""Apply PortraitTalk: a patched MODEL plus conditioning and an empty latent for the stock KSampler (one clip).

For graphs that want ComfyUI's own KSampler (or KSamplerAdvanced, custom sigmas, ...) rather than
PortraitTalk Sampler: one clip of the audio, ordinary two-branch guidance (positive = prompt with
identity and audio, negative = neither).
"""

import torch
from comfy_api.latest import io

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core.comfy_patches import Branch

from .region import region_input, region_latents
from .sampler import prepare_patched_model, strength_inputs
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
                region_input(),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The patched MODEL."),
                io.Latent.Output(display_name="latent", tooltip="One latent per frame of the clip: empty, or for "
                                                                 "region mouth the photo's with a noise mask."),
            ],
        )

    @classmethod
    def execute(cls, model, vae, positive, portraittalk, refs, audio_features, start_frame=0, frames=16,
                identity_strength=1.0, audio_strength=1.0, motion_scale=1.0, structure_strength=1.0,
                region="model default"):
        check_finite(identity_strength=identity_strength, audio_strength=audio_strength, motion_scale=motion_scale,
                     structure_strength=structure_strength)
        end = min(start_frame + frames, audio_features.n_frames)
        start = min(start_frame, end - 1)
        # The stock KSampler batches [positive, negative] as chunks 0 and 1.
        branches = {0: Branch(identity=True, audio=True), 1: Branch()}
        patched, run, device, dtype, encoded, _ = prepare_patched_model(model, vae, positive, portraittalk, refs, branches,
                                                            identity_strength, audio_strength, motion_scale,
                                                            structure_strength)
        with torch.inference_mode():
            run.audio_tokens = portraittalk.model.audio_projection(
                audio_features.frames[start:end].to(device, dtype))
        first, free = region_latents(region, portraittalk.config, refs.faces[:1], encoded, vae.downscale_ratio)
        latent = {"samples": first.repeat(end - start, 1, 1, 1)}
        if free.min() < 1:  # only the mouth is generated: the stock KSampler inpaints with a noise mask
            latent["noise_mask"] = free.repeat(end - start, 1, 1, 1)
        return io.NodeOutput(patched, latent)
