"""Stage text: the backbone's text encoder trained contrastively against a small image encoder, as CLIP was.

A text-to-image model learns what its prompts' words look like from its text encoder. SD1.5 takes CLIP's, trained
on 400M image-caption pairs; the demo model's is trained from scratch, and through the diffusion loss alone it
told some colour words apart poorly: over "<colour> background", its states for pink and beige had a cosine of
0.999, green and red 0.91, and the base drew pink as white and green as red. Contrastive pairs of stills and their
captions first teach the encoder every word that changes how a picture looks; the base stage then goes on training
it with the UNet, best at a tenth of the UNet's rate. Over the whole palette on the 12 val photos (two noise seeds,
228 restyles), a demo base trained after 1000 steps of this stage found the asked background in 131 (encoder at a
tenth of the rate), 113 (at the full rate) and 74 (frozen); the same base without the stage found 77.

The pair is transformers' ``CLIPModel``, with the backbone's text encoder as its text tower (shared, so its
training is the backbone's) and a small ViT of the frames' size as its image tower, which is dropped afterwards.
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextModel

# The image tower: 8 px patches, so a 64 px frame is 8 x 8 tokens; small enough to add minutes, not hours.
VISION = dict(patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)


def contrastive_pair(text_encoder: CLIPTextModel, image_size: int, projection_dim: int = 64) -> CLIPModel:
    """A CLIPModel whose text tower is ``text_encoder`` itself (the same module, not a copy)."""
    config = CLIPConfig(text_config=text_encoder.config.to_dict(),
                        vision_config=dict(VISION, image_size=image_size), projection_dim=projection_dim)
    pair = CLIPModel(config)
    pair.text_model = text_encoder
    return pair.to(text_encoder.device, text_encoder.dtype)


def contrastive_loss(pair: CLIPModel, token_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch's image-caption similarities; pixels in [-1, 1]."""
    return pair(input_ids=token_ids, pixel_values=pixels, return_loss=True).loss
