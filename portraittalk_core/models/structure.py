"""Structure guidance: head placement mask and landmark map -> a residual after AnimateNet's conv_in.

diffusers' ControlNet conditioning embedding does exactly the job (four strided convs, zero-initialised
output), so a fresh encoder adds nothing until it is trained.

Hallo's face locator (hallo/models/face_locator.py:60-113) is this same network, layer for layer (3x3 convs,
padding 1, SiLU after every conv but the last, a stride-2 conv closing each stage), run frame by frame; it
differs only in its input, an RGB face box (3 channels), and its widths (16, 32, 64, 128):
``structure_encoder(320, (16, 32, 64, 128), input_channels=3)`` loads their ``face_locator.*`` weights.
"""

from __future__ import annotations

from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

STRUCTURE_CHANNELS = 4  # head placement mask + 3 landmark channels (outline+brows, eyes+nose, mouth)


def structure_encoder(unet_channels: int, hidden_channels: tuple[int, ...],
                      input_channels: int = STRUCTURE_CHANNELS) -> ControlNetConditioningEmbedding:
    return ControlNetConditioningEmbedding(unet_channels, input_channels, tuple(hidden_channels))
