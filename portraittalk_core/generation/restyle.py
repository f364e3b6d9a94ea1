"""Restyle: a photo redrawn outside its face (hair, clothes, background) from the prompt, by the base UNet.

``GenerationSettings.restyle``; the diffusers pipeline runs it on each reference before the animation
(``PortraitTalkPipeline.restyle``), so the animation keeps the new look.
"""

from __future__ import annotations

import torch

from .guidance import start_timesteps


def restyle_latents(predict_noise, photo: torch.Tensor, keep: torch.Tensor, noise: torch.Tensor, scheduler,
                    steps: int) -> torch.Tensor:
    """Inpaint ``photo`` (1, C, h, w) latents where ``keep`` (1, 1, h, w) is 0, from pure noise: at every step the
    kept cells go back at the current noise level (as RePaint and ``denoise_clip`` do), so the redrawn part is
    drawn around them. From pure noise, not the noised photo: the schedule's last 7% of signal would carry the old
    background's colour into the new one. ``predict_noise(latents, t)`` is the guided noise prediction."""
    latents = noise * scheduler.init_noise_sigma
    for t in start_timesteps(scheduler, steps, 1.0, photo.device):
        latents = torch.lerp(latents, scheduler.add_noise(photo, noise, t[None]), keep)
        latents = scheduler.step(predict_noise(scheduler.scale_model_input(latents, t), t), t, latents).prev_sample
    return torch.lerp(latents, photo, keep)

