"""Training losses.

Mask reconstruction (stage 1, IdentityNet), exactly:

    z0   = E(x)                      latent of the original frame x (E: the VAE encoder, scaled)
    z~   = E(x * (1 - M))            latent of the frame with the masked pixels M set to 0 (mid grey)
    z~_t = sqrt(a_t) z~ + sqrt(1 - a_t) eps,    eps ~ N(0, I), t ~ U{0, ..., T-1}, a_t = alphas_cumprod[t]
    eps* = (z~_t - sqrt(a_t) z0) / sqrt(1 - a_t) = eps + sqrt(a_t / (1 - a_t)) (z~ - z0)
    L    = mean( w * (eps_theta(z~_t, t, text, identity) - eps*)^2 ),   w = 1 + (lambda - 1) * m

The network sees a noised version of the *corrupted* frame (z~_t, as ``DDPMScheduler.add_noise`` makes it) and
is trained to predict the noise that explains it as a noised version of the *original* frame: denoising with that
prediction leads back to the unmasked frame, so IdentityNet must rebuild the hidden regions from the identity
tokens and the prompt.
``m`` is the mask at latent resolution; ``lambda`` (``masked_weight``) up-weights the rebuilt regions.
Where nothing is masked (z~ = z0), eps* = eps and L is the ordinary denoising loss.

The VAE's reconstruction (stages vae and decoder, ``reconstruction_loss``): L1 of the pixels and of their horizontal
and vertical differences.
"""

from __future__ import annotations

import torch


def _broadcast(a_t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a_t.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def mask_reconstruction_target(noise: torch.Tensor, corrupted: torch.Tensor, clean: torch.Tensor,
                               a_t: torch.Tensor) -> torch.Tensor:
    """eps* = eps + sqrt(a_t / (1 - a_t)) (z~ - z0): the noise of the original frame (see the module text)."""
    a_t = _broadcast(a_t, noise)
    return noise + (a_t / (1 - a_t)).sqrt() * (corrupted - clean)


def mask_reconstruction_loss(prediction: torch.Tensor, noise: torch.Tensor, corrupted: torch.Tensor,
                             clean: torch.Tensor, a_t: torch.Tensor, latent_mask: torch.Tensor | None = None,
                             masked_weight: float = 2.0) -> torch.Tensor:
    target = mask_reconstruction_target(noise, corrupted, clean, a_t)
    error = (prediction.float() - target.float()) ** 2
    if latent_mask is not None:
        error = error * (1 + (masked_weight - 1) * latent_mask.to(error.dtype))
    return error.mean()


def reconstruction_loss(reconstruction: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """L1 of the pixels and of their horizontal and vertical differences (which keeps edges such as the lips')."""
    loss = (reconstruction - frames).abs().mean()
    for made, real in zip(_differences(reconstruction), _differences(frames)):
        loss = loss + (made - real).abs().mean()
    return loss


def _differences(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]
