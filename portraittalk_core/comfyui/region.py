"""Region "mouth" in ComfyUI's terms: start latents with a denoise mask, and the photo pasted over IMAGE frames.

The compositing itself is generation/compositing.py's, shared with the diffusers pipeline; this converts to and
from ComfyUI's layouts (latents (F, C, h, w), IMAGE frames (F, H, W, 3) floats in [0, 1]).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..generation.compositing import kept_outside_mouth, paste_over_photo, paste_weights

MODEL_DEFAULT = "model default"   # the region input's choice that takes the model's own (config.region)


def resolved(region: str, config) -> str:
    return config.region if region == MODEL_DEFAULT else region


def region_latents(region: str, config, faces: list, encoded: torch.Tensor, downscale: int,
                   from_photo: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(start latents (F, 4, h, w), denoise masks (F, 1, h, w)) of the aligned ``faces`` (the first reference, or it
    moved frame by frame) and their VAE latents ``encoded``. Region "mouth" is ComfyUI inpainting: frames start as
    the photo's latent and the mask frees only its mouth region (1 = generated). ``from_photo`` (denoise < 1)
    starts whole-frame generation from the photo too."""
    region = resolved(region, config)
    photo = encoded[:len(faces)].float().cpu()
    if region == "mouth":
        return photo, torch.cat([1 - kept_outside_mouth(face, downscale)[:, :, 0] for face in faces])
    start = photo if from_photo else torch.zeros_like(photo)
    return start, torch.ones(len(faces), 1, *photo.shape[-2:])


def pasted(images: torch.Tensor, faces: list, config, region: str, downscale: int | None = None) -> torch.Tensor:
    """IMAGE frames with the photo's pixels outside the redrawn mouth cells (region mouth; any other region:
    unchanged). ``faces``: the first reference for every frame, or one moved face a frame. The diffusers host's
    paste_photo (generation/compositing.py's paste_over_photo), on ComfyUI's float frames. ``downscale``: the
    VAE's (the model config's by default)."""
    if resolved(region, config) != "mouth":
        return images
    face = faces[0]
    if tuple(images.shape[1:3]) != face.image.shape[:2]:
        raise InputError(f"frames are {images.shape[2]}x{images.shape[1]} but the references are "
                         f"{face.image.shape[1]}x{face.image.shape[0]}",
                         "connect the frames straight from VAE Decode, before any upscaling or resizing")
    downscale = downscale or config.vae_scale
    weights = torch.from_numpy(np.stack([paste_weights(kept_outside_mouth(f, downscale), downscale) for f in faces]))
    photo = torch.from_numpy(np.stack([f.image for f in faces]).astype(np.float32) / 255.0)
    return paste_over_photo(images.float().cpu(), photo, weights).to(images.dtype)
