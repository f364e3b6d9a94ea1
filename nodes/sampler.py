"""PortraitTalk Sampler: the user's MODEL, patched, sampled clip by clip with ComfyUI's own samplers."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy.ldm.modules.attention import optimized_attention
import numpy as np
import torch
from comfy_api.latest import io

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core.clips import plan_clips
from ..portraittalk_core.comfy_patches import Branch, ComfyRun
from ..portraittalk_core.conditioning import faces_structure
from ..portraittalk_core.head_motion import moved_face
from ..portraittalk_core.pipeline import BRANCHES, guidance_weights

from .host import StructurePatch, check_model_family, patch_model, structure_residual
from .region import paste_photo_input, pasted, region_input, region_latents
from .types import AudioFeatures, HeadMotion, IdentityRefs, PortraitTalk


def strength_inputs() -> list:
    """The weights of PortraitTalk's added modules, shared by the Sampler and Apply PortraitTalk."""
    return [
        io.Float.Input("identity_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Weight of the identity attention paths (1 = as trained)."),
        io.Float.Input("audio_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Weight of the audio attention path (1 = as trained)."),
        io.Float.Input("motion_scale", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Weight of the temporal modules (0 = frames independent)."),
        io.Float.Input("structure_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Weight of the head placement and landmark guidance."),
    ]


class PortraitTalkGuider(comfy.samplers.CFGGuider):
    """Classifier-free guidance over text, identity and audio, all branches in one batched model call:
    eps = e_u + s_id (e_i - e_u) + s_audio (e_ia - e_i) + s_text (e_iat - e_ia)."""

    def __init__(self, model_patcher, weights: dict[str, float], positive, negative):
        super().__init__(model_patcher)
        self.names = list(weights)
        self.weights = [weights[n] for n in self.names]
        self.inner_set_conds({n: positive if BRANCHES[n][0] else negative for n in self.names})

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        conds = [self.conds.get(n) for n in self.names]
        outs = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        return sum(w * out for w, out in zip(self.weights, outs))


def prepare_patched_model(model, vae, positive, portraittalk, refs, branches: dict[int, Branch],
                          identity_strength: float, audio_strength: float, motion_scale: float,
                          structure_strength: float):
    """Identity tokens and the reference bank (once per generation), the patched clone of ``model``, the
    references encoded by ``vae`` (latents as ComfyUI's samplers take them) and the structure patch (None at
    strength 0)."""
    net, config = portraittalk.model, portraittalk.config
    check_model_family(model, config)
    dtype = model.model_dtype()  # PortraitTalk's modules compute inside the UNet, in its dtype
    if next(net.parameters()).dtype != dtype:
        net.to(dtype)
    comfy.model_management.load_models_gpu([portraittalk.patcher])
    device = portraittalk.patcher.load_device
    latent_format = model.get_model_object("latent_format")
    with torch.inference_mode():
        encoded = vae.encode((refs.pixels.permute(0, 2, 3, 1) + 1) / 2)   # the VAE's own latents, as samplers take
        ref_latents = latent_format.process_in(encoded)
        tokens = net.identity_projection(refs.embeddings.to(device, dtype)[None])
        _, bank = net.identity_net(ref_latents.to(device, dtype)[None], positive[0][0].to(device, dtype), tokens,
                                   torch.full((1,), identity_strength, device=device, dtype=dtype))
    run = ComfyRun(branches, identity_tokens=tokens, bank=bank, identity_strength=identity_strength,
                   audio_strength=audio_strength, reference_strength=identity_strength,
                   base_attention=optimized_attention)
    structure = None
    if structure_strength:
        structure = StructurePatch(structure_strength * structure_residual(net.animate_net, refs.structure, device,
                                                                           dtype))
    patched = patch_model(model, net.animate_net, run, structure, motion_scale)
    patched.set_additional_models("portraittalk", [portraittalk.patcher])
    return patched, run, device, dtype, encoded, structure


def _branches(names: list[str]) -> dict[int, Branch]:
    # calc_cond_batch reports each chunk by its index in the conds list: that index picks the branch.
    return {i: Branch(identity=BRANCHES[n][1], audio=BRANCHES[n][2]) for i, n in enumerate(names)}


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
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Same seed, same video."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="Denoising steps per clip."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="ddim",
                               tooltip="ComfyUI sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="ComfyUI noise schedule."),
                io.Float.Input("text_scale", default=5.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Guidance of the prompt."),
                io.Float.Input("identity_scale", default=2.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Guidance of the identity (references)."),
                io.Float.Input("audio_scale", default=3.5, min=0.0, max=30.0, step=0.1,
                               tooltip="Guidance of the audio (lip sync). 3.5 suits most models; the demo "
                                       "model's own default is 9 (its workflow sets it)."),
                *strength_inputs(),
                io.Int.Input("clip_frames", default=0, min=0, max=32,
                             tooltip="Frames denoised together; 0 = the model's default."),
                io.Int.Input("motion_frames", default=-1, min=-1, max=31,
                             tooltip="Frames of the previous clip each clip continues from; -1 = the model's default."),
                region_input(),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="Share of the schedule that runs, as in KSampler: below 1 every frame starts "
                                       "from the first reference's latent noised to that level."),
                paste_photo_input(),
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
    def execute(cls, model, vae, positive, negative, portraittalk, refs, audio_features, seed=0, steps=25,
                sampler_name="ddim", scheduler="normal", text_scale=5.0, identity_scale=2.0, audio_scale=3.5,
                identity_strength=1.0, audio_strength=1.0, motion_scale=1.0, structure_strength=1.0,
                clip_frames=0, motion_frames=-1, region="model default", denoise=1.0,
                paste_photo=True, head_motion=None) -> io.NodeOutput:
        check_finite(text_scale=text_scale, identity_scale=identity_scale, audio_scale=audio_scale,
                     identity_strength=identity_strength, audio_strength=audio_strength, motion_scale=motion_scale,
                     structure_strength=structure_strength, denoise=denoise)
        config = portraittalk.config
        weights = guidance_weights(text_scale, identity_scale, audio_scale)
        patched, run, device, dtype, encoded, structure = prepare_patched_model(
            model, vae, positive, portraittalk, refs, _branches(list(weights)), identity_strength, audio_strength,
            motion_scale, structure_strength)
        net = portraittalk.model
        guider = PortraitTalkGuider(patched, weights, positive, negative)

        clip_frames = clip_frames or config.clip_frames
        motion_frames = config.motion_frames if motion_frames < 0 else min(motion_frames, clip_frames - 1)
        clips = plan_clips(audio_features.n_frames, clip_frames, motion_frames)
        sampler = comfy.samplers.sampler_object(sampler_name)
        # denoise < 1 as KSampler does it: the last ``steps`` sigmas of a schedule of steps / denoise.
        total = steps if denoise >= 1.0 else int(steps / denoise)
        sigmas = comfy.samplers.calculate_sigmas(patched.get_model_object("model_sampling"), scheduler, total)
        sigmas = sigmas[-(steps + 1):].cpu()
        photo = refs.faces[:1]
        start, free = region_latents(region, config, photo, encoded, vae.downscale_ratio, from_photo=denoise < 1.0)
        moves = None
        if head_motion is not None:
            moves = head_motion.at(audio_features.fps, audio_features.n_frames, photo[0].image.shape[0])
        progress = comfy.utils.ProgressBar(len(clips))
        frames, motion = [], None
        for index, clip in enumerate(clips):
            comfy.model_management.throw_exception_if_processing_interrupted()
            with torch.inference_mode():
                run.audio_tokens = net.audio_projection(audio_features.frames[clip.first:clip.end].to(device, dtype))
            if moves is None:
                latent, mask = start.repeat(clip.length, 1, 1, 1), free.repeat(clip.length, 1, 1, 1)
            else:  # the photo moved for each frame of this clip: its latents, masks and structure move with it
                faces = [moved_face(photo[0], transform) for transform in moves[clip.first:clip.end]]
                moved = torch.from_numpy(np.stack([f.image for f in faces])).float() / 255.0
                latent, mask = region_latents(region, config, faces, vae.encode(moved), vae.downscale_ratio,
                                              from_photo=denoise < 1.0)
                if structure is not None:
                    maps = torch.from_numpy(faces_structure(faces))
                    structure.residual = structure_strength * structure_residual(net.animate_net, maps, device, dtype)
            if clip.context:
                latent[:clip.context], mask[:clip.context] = motion, 0.0
            noise = comfy.sample.prepare_noise(latent, seed + index)
            callback = latent_preview.prepare_callback(patched, steps)
            samples = guider.sample(noise, latent, sampler, sigmas, denoise_mask=mask, callback=callback,
                                    disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed + index)
            samples = samples.to(comfy.model_management.intermediate_device())
            motion = samples[samples.shape[0] - motion_frames:] if motion_frames else None
            decoded = vae.decode(samples[clip.context:])
            if paste_photo:
                decoded = pasted(decoded, photo if moves is None else faces[clip.context:], config, region,
                                 vae.downscale_ratio)
            frames.append(photo[0].look.restore(decoded))  # the photo's own exposure and colour (face.PhotoLook)
            progress.update(1)
        return io.NodeOutput(torch.cat(frames).float(), float(audio_features.fps))
