"""Classifier-free guidance over text, identity and audio, and the diffusion steps around it.

The guidance branches and their weights are shared by both hosts: the diffusers pipeline batches them in
``pipeline.PortraitTalkPipeline.denoise_clip``, the ComfyUI host as conds of one ``calc_cond_batch`` call
(comfyui/sampling.py). The schedule helpers cut a scheduler's timesteps for partial runs and set up the
latents of the first step; ``known_latents`` is what inpainting in time and in space keeps.
"""

from __future__ import annotations

import torch

# Branches of the batched guidance call: (positive prompt?, identity on?, audio on?).
BRANCHES = {"uncond": (False, False, False), "identity": (False, True, False),
            "identity_audio": (False, True, True), "full": (True, True, True)}


def guidance_weights(text_scale: float, identity_scale: float, audio_scale: float) -> dict[str, float]:
    """Weights of each branch's noise prediction, nested as in InstructPix2Pix:

        eps = e_u + s_id (e_i - e_u) + s_audio (e_ia - e_i) + s_text (e_iat - e_ia)

    Branches with weight 0 are skipped: with every scale at 1 only the full branch runs.
    """
    weights = {"uncond": 1.0 - identity_scale, "identity": identity_scale - audio_scale,
               "identity_audio": audio_scale - text_scale, "full": text_scale}
    return {name: w for name, w in weights.items() if w != 0.0}


def start_timesteps(scheduler, steps: int, denoise: float, device) -> torch.Tensor:
    """The scheduler's timesteps for ``steps`` steps, the last ``round(steps * denoise)`` of them (at least
    one): a partial run from a noised image, as diffusers' img2img pipelines cut the schedule."""
    scheduler.set_timesteps(steps, device=device)
    keep = max(1, min(steps, round(steps * denoise)))
    start = len(scheduler.timesteps) - keep * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def start_latents(scheduler, photo: torch.Tensor, noise: torch.Tensor, first: torch.Tensor, from_photo: bool
                  ) -> torch.Tensor:
    """The latents the first step denoises: pure noise, or ``from_photo`` the photo noised to the ``first`` timestep
    (img2img). Even at the noisiest step the SD schedule leaves a share of the signal (0.07), from which the
    networks learn flat colours such as the skin's: from pure noise, redrawn regions take a random colour."""
    if from_photo:
        return scheduler.add_noise(photo, noise, first[None])
    return noise * scheduler.init_noise_sigma


def known_latents(photo: torch.Tensor, keep: torch.Tensor | None, motion_latents: torch.Tensor | None,
                  context: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(known latents, mask) for one clip of ``photo``'s shape (1, C, F, h, w), the mask 1 where the latents are
    known: the photo where ``keep`` (1, 1, 1 or F, h, w) says so, and the first ``context`` frames, which are the
    previous clip's ``motion_latents``. (None, None) when nothing is known."""
    if keep is None and not context:
        return None, None
    known, mask = photo.clone(), torch.zeros_like(photo[:, :1])
    if keep is not None:
        mask[:] = keep
    if context:
        known[:, :, :context], mask[:, :, :context] = motion_latents, 1.0
    return known, mask


