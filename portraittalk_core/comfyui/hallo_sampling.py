"""The ComfyUI host's driver of Hallo's clip loop (config ``reference_inputs`` "hallo": docs/hallo.md), what
PortraitTalk Hallo Sampler runs. Imports ComfyUI.

The loop is the diffusers host's (pipeline._generate_hallo) on the same shared rules: generation/loop.sample_clips
over whole clips of the padded audio (hallo.hallo_clips), each clip's reference rows from
generation/reference_rows (the photo, then the previous clip's last ``motion_frames`` frames as the VAE decoded
them, Hallo2's pixel drop where the config has one), the frames past the audio dropped (frames_of_the_audio). What
the host brings is ComfyUI's: the user's VAE encodes the rows and decodes the frames, the MODEL patched by
model.prepare_hallo_model is set for each clip by model.set_hallo_clip, and ComfyUI's stock CFG guider samples it
(positive: the photo's face tokens, negative: those of a zero embedding, cfg: the audio scale) with the user's
sampler and scheduler, previews, progress bar and interruption.

Noise: each clip's comes from ComfyUI's ``prepare_noise`` at the seed plus the clip's index, as PortraitTalk Sampler
draws it; Hallo2's pixel drop from a torch generator seeded with the seed, drawn before each clip's noise as theirs.
The same computation as their pipeline, not the same random numbers: matching their noise draw for draw is the
diffusers host's job (``portraittalk generate``). The VAE runs in the dtype ComfyUI gives it (``--fp32-vae`` for
float32); the motion frames it decodes are read as floats, never rounded to 8 bits, as theirs.
"""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..checks import check_hallo_settings
from ..clips import Clip
from ..generation.loop import sample_clips
from ..generation.reference_rows import frames_of_the_audio, reference_rows
from ..generation.settings import GenerationSettings, resolved
from .hallo import check_hallo_layout, check_photo_inputs, hallo_clips, motion_from_images, vae_images
from .model import prepare_hallo_model, set_hallo_clip
from .sampling import sigmas_for


def sample_hallo(model, vae, portraittalk, refs, audio_features, settings: GenerationSettings, sampler_name: str,
                 scheduler: str) -> torch.Tensor:
    """The frames, an IMAGE batch (F, H, W, 3), of a Hallo-layout model (``portraittalk``, a bundle) on ``model``
    (Hallo's denoiser as a MODEL) for ``audio_features`` (encoded for this model: padded to whole clips) and the
    photo in ``refs`` (conditioning.HalloInputs). Reads ``settings``' seed, steps, audio_scale (None: the model's)
    and motion_scale; ``sampler_name`` and ``scheduler`` are ComfyUI's."""
    check_hallo_layout(portraittalk)
    photo = check_photo_inputs(refs)
    config = portraittalk.config
    settings = resolved(settings, config)
    check_hallo_settings(settings, config)
    clips = hallo_clips(audio_features, config)
    hallo = prepare_hallo_model(model, portraittalk, photo.embedding, photo.face_box, photo.masks,
                                settings.motion_scale)
    guider = comfy.samplers.CFGGuider(hallo.model)
    guider.set_conds(hallo.positive, hallo.negative)
    guider.set_cfg(settings.audio_scale)
    sampler = comfy.samplers.sampler_object(sampler_name)
    sigmas = sigmas_for(hallo.model, scheduler, settings.steps, 1.0)
    latent_format = hallo.model.get_model_object("latent_format")
    side = photo.pixels.shape[-1] // vae.downscale_ratio
    drops = torch.Generator("cpu").manual_seed(settings.seed)   # Hallo2's pixel drop (config motion_frame_drop)

    def denoise(clip: Clip, previous: torch.Tensor | None) -> torch.Tensor:
        comfy.model_management.throw_exception_if_processing_interrupted()
        # the previous clip's last frames decoded one at a time, as their pipeline decodes
        motion = None if previous is None else motion_from_images(torch.cat([vae.decode(x[None]) for x in previous]))
        rows = reference_rows(photo.pixels, motion, settings.motion_frames, config.motion_frame_drop, photo.face_box,
                              drops)
        references = latent_format.process_in(vae.encode(vae_images(rows)))
        comfy.model_management.load_models_gpu([portraittalk.patcher])   # the VAE may have moved it off
        set_hallo_clip(hallo, portraittalk, references, audio_features.frames[clip.start:clip.end])
        latent = torch.zeros(clip.length, latent_format.latent_channels, side, side)
        seed = settings.seed + clips.index(clip)
        noise = comfy.sample.prepare_noise(latent, seed)
        callback = latent_preview.prepare_callback(hallo.model, settings.steps)
        samples = guider.sample(noise, latent, sampler, sigmas, callback=callback,
                                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        return samples.to(comfy.model_management.intermediate_device())

    def decode(clip: Clip, latents: torch.Tensor) -> list[torch.Tensor]:
        kept = frames_of_the_audio(clip, audio_features.n_frames)
        return [vae.decode(latents[:kept])] if kept else []

    progress = comfy.utils.ProgressBar(len(clips))
    frames = list(sample_clips(clips, settings.motion_frames, denoise, decode,
                               on_clip=lambda clip: progress.update(1)))
    return torch.cat(frames).float()
