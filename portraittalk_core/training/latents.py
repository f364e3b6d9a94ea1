"""The VAE's latents as the later stages see them: their scale, and what identifies the VAE that made them."""

from __future__ import annotations

import torch


@torch.no_grad()
def latent_scaling_factor(vae, pixels: torch.Tensor) -> float:
    """1 / std of the VAE's latents over ``pixels``: scaled latents have unit variance, which the noise
    schedule assumes (SD's 0.18215 was found the same way)."""
    return float(1.0 / vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean.float().std())


def vae_fingerprint(vae) -> str:
    """Identifies what a VAE's latents depend on (for the latent cache): a sum over every tensor of the encoder side
    (encoder, quant_conv), and the scaling factor. The decoder is left out: stage decoder changes it alone."""
    total = sum(float(t.double().abs().sum()) for name, t in vae.state_dict().items()
                if name.startswith(("encoder.", "quant_conv.")))
    return f"{total:.10e}/{vae.config.scaling_factor:.10e}"
