"""The ComfyUI host's driver of the clip loop (generation/loop.py): the user's MODEL, patched, sampled clip by clip
with ComfyUI's own samplers and schedulers. What PortraitTalk Sampler runs. Imports ComfyUI."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import numpy as np
import torch

from ..clips import Clip, plan_clips
from ..conditioning import faces_structure
from ..generation.guidance import BRANCHES, guidance_weights
from ..generation.loop import sample_clips
from ..generation.settings import GenerationSettings, resolved
from ..head_motion import moved_face
from .host import structure_residual
from .model import prepare_patched_model, set_audio_tokens
from .patches import Branch
from .region import pasted, region_latents


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


def branches(names: list[str]) -> dict[int, Branch]:
    """calc_cond_batch reports each chunk by its index in the conds list: that index picks the branch."""
    return {i: Branch(identity=BRANCHES[n][1], audio=BRANCHES[n][2]) for i, n in enumerate(names)}


def sigmas_for(patched_model, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """The schedule's sigmas; denoise < 1 as KSampler does it: the last ``steps`` sigmas of steps / denoise."""
    total = steps if denoise >= 1.0 else int(steps / denoise)
    sigmas = comfy.samplers.calculate_sigmas(patched_model.get_model_object("model_sampling"), scheduler, total)
    return sigmas[-(steps + 1):].cpu()


def sample_talking_face(model, vae, positive, negative, portraittalk, refs, audio_features,
                        settings: GenerationSettings, sampler_name: str, scheduler: str, head_motion=None
                        ) -> torch.Tensor:
    """The talking-face frames, an IMAGE batch (F, H, W, 3), for ``audio_features`` in the likeness of ``refs``.
    ``settings.sampler`` is ignored: ComfyUI's ``sampler_name`` and ``scheduler`` sample."""
    config, net = portraittalk.config, portraittalk.model
    model_settings = resolved(settings, config)
    weights = guidance_weights(settings.text_scale, settings.identity_scale, model_settings.audio_scale)
    patched = prepare_patched_model(model, vae, positive, portraittalk, refs, branches(list(weights)),
                                    settings.identity_strength, settings.audio_strength, settings.motion_scale,
                                    settings.structure_strength)
    guider = PortraitTalkGuider(patched.model, weights, positive, negative)
    region, clip_frames = model_settings.region, model_settings.clip_frames
    # a motion_frames the node was given is cut to fit the clip; the model's own is left to plan_clips to refuse
    motion_frames = (model_settings.motion_frames if settings.motion_frames is None
                     else min(settings.motion_frames, clip_frames - 1))
    clips = plan_clips(audio_features.n_frames, clip_frames, motion_frames)
    sampler = comfy.samplers.sampler_object(sampler_name)
    sigmas = sigmas_for(patched.model, scheduler, settings.steps, settings.denoise)
    from_photo = settings.denoise < 1.0
    photo = refs.faces[:1]
    start, free = region_latents(region, config, photo, patched.encoded, vae.downscale_ratio, from_photo=from_photo)
    moves = None
    if head_motion is not None:
        moves = head_motion.at(audio_features.fps, audio_features.n_frames, photo[0].image.shape[0])
    faces_of: dict[Clip, list] = {}   # each clip's photo, moved a frame with head motion, from sampling to paste

    def denoise(clip: Clip, motion: torch.Tensor | None) -> torch.Tensor:
        comfy.model_management.throw_exception_if_processing_interrupted()
        set_audio_tokens(patched, portraittalk, audio_features.frames[clip.first:clip.end])
        if moves is None:
            faces_of[clip] = photo
            latent, mask = start.repeat(clip.length, 1, 1, 1), free.repeat(clip.length, 1, 1, 1)
        else:  # the photo moved for each frame of this clip: its latents, masks and structure move with it
            faces = faces_of[clip] = [moved_face(photo[0], transform) for transform in moves[clip.first:clip.end]]
            moved = torch.from_numpy(np.stack([f.image for f in faces])).float() / 255.0
            latent, mask = region_latents(region, config, faces, vae.encode(moved), vae.downscale_ratio,
                                          from_photo=from_photo)
            if patched.structure is not None:
                maps = torch.from_numpy(faces_structure(faces))
                patched.structure.residual = settings.structure_strength * structure_residual(
                    net.animate_net, maps, patched.device, patched.dtype)
        if clip.context:
            latent[:clip.context], mask[:clip.context] = motion, 0.0
        seed = settings.seed + clips.index(clip)
        noise = comfy.sample.prepare_noise(latent, seed)
        callback = latent_preview.prepare_callback(patched.model, settings.steps)
        samples = guider.sample(noise, latent, sampler, sigmas, denoise_mask=mask, callback=callback,
                                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        return samples.to(comfy.model_management.intermediate_device())

    def decode(clip: Clip, latents: torch.Tensor) -> list[torch.Tensor]:
        decoded = vae.decode(latents)
        faces = faces_of.pop(clip)
        if settings.paste_photo:
            decoded = pasted(decoded, faces if moves is None else faces[clip.context:], config, region,
                             vae.downscale_ratio)
        return [photo[0].look.restore(decoded)]   # the photo's own exposure and colour (face.PhotoLook)

    progress = comfy.utils.ProgressBar(len(clips))
    frames = list(sample_clips(clips, motion_frames, denoise, decode, on_clip=lambda clip: progress.update(1)))
    return torch.cat(frames).float()
