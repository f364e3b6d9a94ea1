"""Structure guidance: head placement mask and landmark map -> a residual after AnimateNet's conv_in.

diffusers' ControlNet conditioning embedding does exactly the job (four strided convs, zero-initialised
output), so a fresh encoder adds nothing until it is trained.
"""

from __future__ import annotations

from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

STRUCTURE_CHANNELS = 4  # head placement mask + 3 landmark channels (outline+brows, eyes+nose, mouth)


def structure_encoder(unet_channels: int, hidden_channels: tuple[int, ...]) -> ControlNetConditioningEmbedding:
    return ControlNetConditioningEmbedding(unet_channels, STRUCTURE_CHANNELS, tuple(hidden_channels))
