"""The user's MODEL made ready for one generation: identity tokens and the reference bank computed once, the
patched clone, the references in the VAE's latents and the structure patch; for a Hallo-layout model (docs/hallo.md)
the photo's conditioning once and the reference pass and audio tokens clip by clip. Imports ComfyUI."""

from __future__ import annotations

from typing import NamedTuple

import comfy.model_management
import torch
from comfy.ldm.modules.attention import optimized_attention

from ..conditioning import References
from ..errors import InputError
from ..generation.settings import GenerationSettings, resolved
from .hallo import face_conditioning, face_tokens, hallo_run, reference_pass, structure_patch
from .host import check_model_family, patch_model, structure_residual
from .layers import StructurePatch
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
    if portraittalk.config.context == "identity":
        raise InputError(f"'{portraittalk.name}' reads no prompt: it is conditioned on the photo's face tokens, "
                         "regions and motion frames (a Hallo-layout model, docs/hallo.md), which PortraitTalk "
                         "Sampler and Apply PortraitTalk do not make",
                         "sample Hallo's converted weights with PortraitTalk Hallo Sampler (workflows/"
                         "portraittalk_hallo.json); for this node, load weights made for a prompt (the sd15, tiny or "
                         "demo configs) in PortraitTalk Loader")
    if not isinstance(refs, References):
        raise InputError("these refs were made for a Hallo-layout model (the whole photo, its regions and raw "
                         "embedding), not for this PortraitTalk model",
                         "feed PortraitTalk Load Identity Refs from the same PortraitTalk Loader as this node")
    net = portraittalk.model
    device, dtype = _loaded(model, portraittalk)
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
    patched = patch_model(model, net.animate_net, run, structure, motion_scale, portraittalk.config.schedule)
    patched.set_additional_models("portraittalk", [portraittalk.patcher])
    return PatchedModel(patched, run, device, dtype, encoded, structure)


def _loaded(model, portraittalk) -> tuple[torch.device, torch.dtype]:
    """PortraitTalk's modules on their device, in the MODEL's dtype (they compute inside its UNet): (device, dtype)."""
    net = portraittalk.model
    check_model_family(model, portraittalk.config)
    dtype = model.model_dtype()
    if next(net.parameters()).dtype != dtype:
        net.to(dtype)
    comfy.model_management.load_models_gpu([portraittalk.patcher])
    return portraittalk.patcher.load_device, dtype


class HalloModel(NamedTuple):
    model: object      # the patched clone of the user's MODEL (a ModelPatcher)
    run: ComfyRun      # set_hallo_clip sets its bank, motion prefix and audio tokens before each clip
    positive: list     # CONDITIONING: the photo's face tokens
    negative: list     # CONDITIONING: the face tokens of a zero embedding
    tokens: torch.Tensor   # (2, K, D): [negative; positive], the reference pass's contexts
    device: torch.device
    dtype: torch.dtype


def prepare_hallo_model(model, portraittalk, embedding: torch.Tensor, face_box: torch.Tensor,
                        masks: dict[str, list[torch.Tensor]], motion_scale: float = 1.0) -> HalloModel:
    """``model`` (Hallo's denoiser: hallo_unet.safetensors through a UNet loader) patched with a Hallo-layout
    PortraitTalk model (``portraittalk``, a bundle: the converted portraittalk_hallo.safetensors) for one photo: its
    raw face ``embedding`` (1, E), the face locator's input ``face_box`` (1, 3, R, R) in [0, 1] and its region
    ``masks`` (region -> one (1, h*w) mask a UNet level). Sample it with ComfyUI's CFG guider on ``positive`` and
    ``negative`` at the model's guidance (config ``audio_scale``), after ``set_hallo_clip``."""
    net = portraittalk.model
    device, dtype = _loaded(model, portraittalk)
    with torch.inference_mode():
        tokens = face_tokens(net, embedding.to(device, dtype))
        residual = net.animate_net.structure_encoder(face_box.to(device, dtype))
    run = hallo_run({}, {}, {region: [mask.to(device, dtype) for mask in levels] for region, levels in masks.items()},
                    base_attention=optimized_attention)
    patched = patch_model(model, net.animate_net, run, structure_patch(residual), motion_scale,
                          portraittalk.config.schedule)
    patched.set_additional_models("portraittalk", [portraittalk.patcher])
    return HalloModel(patched, run, *face_conditioning(tokens), tokens, device, dtype)


def set_hallo_clip(hallo: HalloModel, portraittalk, reference_latents: torch.Tensor,
                   audio_windows: torch.Tensor) -> None:
    """Before each clip: the reference pass over ``reference_latents`` (1 + n, C, h, w), the photo's and the motion
    frames' (the photo again for the first clip, then the last frames made, decoded and encoded again:
    scripts/inference.py:294-312), scaled as ComfyUI's samplers take latents (``latent_format.process_in``); and the
    audio tokens of the clip's frames (``audio_windows``: their rows of AudioFeatures.frames)."""
    net = portraittalk.model
    with torch.inference_mode():
        hallo.run.bank, hallo.run.motion_prefix = reference_pass(net, reference_latents.to(hallo.device, hallo.dtype),
                                                                 hallo.tokens)
        hallo.run.audio_tokens = net.audio_projection(audio_windows.to(hallo.device, hallo.dtype))


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
