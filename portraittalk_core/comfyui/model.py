"""The user's MODEL made ready for one generation: identity tokens and the reference bank computed once, the
patched clone, the references in the VAE's latents and the structure patch. Imports ComfyUI."""

from __future__ import annotations

from typing import NamedTuple

import comfy.model_management
import torch
from comfy.ldm.modules.attention import optimized_attention

from ..generation.settings import GenerationSettings, resolved
from .host import StructurePatch, check_model_family, patch_model, structure_residual
from .patches import Branch, ComfyRun
from .region import region_latents


class PatchedModel(NamedTuple):
    model: object                      # the patched clone of the user's MODEL (a ModelPatcher)
    run: ComfyRun                      # what the patches condition on; the sampler sets its audio tokens per clip
    device: torch.device
    dtype: torch.dtype
    encoded: torch.Tensor              # the references' VAE latents, as ComfyUI's samplers take them
    structure: StructurePatch | None   # None at structure strength 0


def prepare_patched_model(model, vae, positive, portraittalk, refs, branches: dict[int, Branch],
                          identity_strength: float, audio_strength: float, motion_scale: float,
                          structure_strength: float) -> PatchedModel:
    """``model`` patched with the PortraitTalk modules of ``portraittalk`` (a loaded bundle, comfyui/bundle.py),
    conditioned on ``refs`` (conditioning.References) read with the ``positive`` prompt."""
    net, config = portraittalk.model, portraittalk.config
    check_model_family(model, config)
    dtype = model.model_dtype()  # PortraitTalk's modules compute inside the UNet, in its dtype
    if next(net.parameters()).dtype != dtype:
        net.to(dtype)
    comfy.model_management.load_models_gpu([portraittalk.patcher])
    device = portraittalk.patcher.load_device
    latent_format = model.get_model_object("latent_format")
    with torch.inference_mode():
        encoded = vae.encode((refs.pixels.permute(0, 2, 3, 1) + 1) / 2)   # the VAE's own latents, as samplers take
        ref_latents = latent_format.process_in(encoded)
        tokens = net.identity_projection(refs.embeddings.to(device, dtype)[None])
        _, bank = net.identity_net(ref_latents.to(device, dtype)[None], positive[0][0].to(device, dtype), tokens,
                                   torch.full((1,), identity_strength, device=device, dtype=dtype))
    run = ComfyRun(branches, identity_tokens=tokens, bank=bank, identity_strength=identity_strength,
                   audio_strength=audio_strength, reference_strength=identity_strength,
                   base_attention=optimized_attention)
    structure = None
    if structure_strength:
        structure = StructurePatch(structure_strength * structure_residual(net.animate_net, refs.structure, device,
                                                                           dtype))
    patched = patch_model(model, net.animate_net, run, structure, motion_scale)
    patched.set_additional_models("portraittalk", [portraittalk.patcher])
    return PatchedModel(patched, run, device, dtype, encoded, structure)


def set_audio_tokens(patched: PatchedModel, portraittalk, audio_windows: torch.Tensor) -> None:
    """The audio tokens of the frames about to be sampled (``audio_windows``: their rows of AudioFeatures.frames)."""
    with torch.inference_mode():
        patched.run.audio_tokens = portraittalk.model.audio_projection(audio_windows.to(patched.device,
                                                                                        patched.dtype))


def one_clip_model(model, vae, positive, portraittalk, refs, audio_features, start_frame: int, frames: int,
                   settings: GenerationSettings) -> tuple[object, dict]:
    """(patched MODEL, LATENT) for the stock KSampler: one clip of the audio from ``start_frame``, two-branch
    guidance (positive = prompt with identity and audio, negative = neither); for region mouth the photo's latents
    with a noise mask."""
    end = min(start_frame + frames, audio_features.n_frames)
    start = min(start_frame, end - 1)
    # The stock KSampler batches [positive, negative] as chunks 0 and 1.
    branches = {0: Branch(identity=True, audio=True), 1: Branch()}
    patched = prepare_patched_model(model, vae, positive, portraittalk, refs, branches, settings.identity_strength,
                                    settings.audio_strength, settings.motion_scale, settings.structure_strength)
    set_audio_tokens(patched, portraittalk, audio_features.frames[start:end])
    region = resolved(settings, portraittalk.config).region
    first, free = region_latents(region, portraittalk.config, refs.faces[:1], patched.encoded, vae.downscale_ratio)
    latent = {"samples": first.repeat(end - start, 1, 1, 1)}
    if free.min() < 1:  # only the mouth is generated: the stock KSampler inpaints with a noise mask
        latent["noise_mask"] = free.repeat(end - start, 1, 1, 1)
    return patched.model, latent
