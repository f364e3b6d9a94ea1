"""What a MODEL patched with a Hallo-layout model conditions on in the ComfyUI host (docs/hallo.md; the config
options ``context`` "identity", ``uncond_inputs`` "zero", ``reference_keys`` "denoiser", ``motion_context``
"reference_prefix", ``audio_attention`` "region_blocks"): the photo's inputs, the CONDITIONING, the reference pass as
the run's bank and motion prefix, the run, and the structure patch; the clip plan and the ComfyUI images the clip
loop passes to the VAE and back. The same computations as the diffusers host's, from the same modules. No ComfyUI
import.

Hallo guides with one scale between two rows (hallo/animate/face_animate.py:415-417), which is what ComfyUI's stock
CFG guider does with the positive and negative CONDITIONING below: the positive chunk gets the face tokens, the
bank, the audio tokens and the face locator's residual; the negative one the projection of a zero face embedding,
no bank, zero audio tokens and no residual, but the same motion prefix and region masks, as theirs.
"""

from __future__ import annotations

import warnings

import torch

from .. import face as face_io
from ..clips import Clip, plan_clips
from ..conditioning import HalloInputs, check_audio_features, prepare_hallo_inputs
from ..errors import InputError, PortraitTalkWarning, WeightsError
from ..generation.reference_rows import decoded_as_motion
from ..models.animate_net import split_reference_record
from .layers import StructurePatch
from .patches import Branch, ComfyRun

# ComfyUI's CFG guiders report the positive CONDITIONING as chunk 0 and the negative as chunk 1 (comfy/samplers.py,
# calc_cond_batch: the index in their conds list).
POSITIVE, NEGATIVE = 0, 1
BRANCHES = {POSITIVE: Branch(identity=True, audio=True), NEGATIVE: Branch()}
# Their batch is [uncond; cond] (face_animate.py:377-378,398): each chunk's video in the reference pass, whose order
# decides which rows read which bank (tiled reading, patches.ComfyRun.bank_rows).
VIDEOS = {NEGATIVE: 0, POSITIVE: 1}


def check_hallo_layout(portraittalk) -> None:
    """Refuse a PortraitTalk model that is not of Hallo's layout (config ``reference_inputs`` "hallo")."""
    if portraittalk.config.reference_inputs != "hallo":
        raise InputError(f"'{portraittalk.name}' is not a Hallo-layout model (config {portraittalk.config.name}): "
                         "PortraitTalk Hallo Sampler runs Hallo's converted weights",
                         "sample it with PortraitTalk Sampler, or load portraittalk_hallo.safetensors (portraittalk "
                         "convert hallo) in PortraitTalk Loader")


def check_raw_embedding(portraittalk) -> None:
    """A model that reads the raw ArcFace embedding (Hallo's face_encoder "arcface") needs insightface: the Loader's
    face detector fell back to, or was set to, mediapipe, which gives no embedding."""
    if portraittalk.model.face_encoder is None and isinstance(portraittalk.detector, face_io.MediaPipeDetector):
        raise WeightsError(f"'{portraittalk.name}' reads the raw ArcFace embedding of the photo's face, which only "
                           "insightface gives, and PortraitTalk Loader's face detector is mediapipe",
                           "pip install insightface onnxruntime (with ComfyUI's Python), put the antelopev2 model "
                           "pack's .onnx files in models/insightface/models/antelopev2, and choose 'insightface "
                           "antelopev2' (or auto) in PortraitTalk Loader's face_detector")


def photo_inputs(portraittalk, images, resolution: int) -> HalloInputs:
    """The first of ``images`` (ComfyUI IMAGE rows, or anything face.to_rgb_uint8 reads) as Hallo's pipeline reads
    the photo (conditioning.prepare_hallo_inputs, as the diffusers host calls it): mediapipe's face mesh for the
    face box and region masks, the Loader's detector (insightface) for the raw embedding. The model reads one photo:
    the others are ignored, with a warning."""
    check_raw_embedding(portraittalk)
    if len(images) > 1:
        warnings.warn(f"'{portraittalk.name}' reads one photo: image 1 of {len(images)} is used, the others are "
                      "ignored", PortraitTalkWarning, stacklevel=2)
    with face_io.MediaPipeDetector() as landmarks:
        return prepare_hallo_inputs(images[0], landmarks, portraittalk.model, resolution, portraittalk.detector,
                                    f"image 1 of {len(images)}")


def check_photo_inputs(refs) -> HalloInputs:
    """``refs`` (Load Identity Refs' output) if they are ``photo_inputs``' HalloInputs; refused otherwise."""
    if not isinstance(refs, HalloInputs):
        raise InputError("these refs were made for a PortraitTalk model of its own layout, not for a Hallo-layout "
                         "model",
                         "feed PortraitTalk Load Identity Refs from the PortraitTalk Loader that loads the "
                         "Hallo-layout weights (portraittalk_hallo.safetensors)")
    return refs


def hallo_clips(audio_features, config) -> list[Clip]:
    """Hallo's clip plan (pipeline._generate_hallo; scripts/inference.py:285): whole clips of the config's
    ``clip_frames`` new frames over the audio padded to whole clips, none overlapping (the motion frames reach the
    next clip through its reference pass, not as its latents)."""
    check_audio_features(audio_features, config)
    padded = len(audio_features.frames)
    if padded % config.clip_frames:
        raise InputError(f"the audio features have {padded} frames, not whole clips of {config.clip_frames}: they were "
                         "not encoded for this model", "encode the audio with PortraitTalk Audio Encode fed by the "
                                                       "same PortraitTalk Loader")
    return plan_clips(padded, config.clip_frames, 0)


def vae_images(rows: torch.Tensor) -> torch.Tensor:
    """Reference rows (R, 3, H, W) in [-1, 1] -> the IMAGE (R, H, W, 3) in [0, 1] that ComfyUI's VAE encodes."""
    return ((rows + 1) / 2).permute(0, 2, 3, 1)


def motion_from_images(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI's decoded IMAGE (n, H, W, 3) in [0, 1] -> the next clip's motion rows (n, 3, H, W), read as Hallo
    reads decoded frames (generation.reference_rows.decoded_as_motion; ComfyUI's VAE has already clamped them)."""
    return decoded_as_motion(images.permute(0, 3, 1, 2) * 2 - 1)


def face_tokens(net, embedding: torch.Tensor) -> torch.Tensor:
    """(2, K, D): [the projection of a zero face embedding; ``embedding``'s] (PortraitTalkModel.zero_uncond_face_tokens)."""
    return net.zero_uncond_face_tokens(embedding)


def face_conditioning(tokens: torch.Tensor) -> tuple[list, list]:
    """(positive, negative) CONDITIONING from ``face_tokens``: with config ``context`` "identity" they are the
    UNet's whole cross-attention context, so they stand where the text encoding stands."""
    return [[tokens[1:], {}]], [[tokens[:1], {}]]


def reference_pass(net, latents: torch.Tensor, tokens: torch.Tensor
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(bank, motion prefix) for ``ComfyRun`` (PortraitTalkModel.reference_pass over ``latents`` (1 + n, C, h, w)
    with ``face_tokens``): bank: attn1 layer -> (2, N, C), each video's reference row; prefix: motion module ->
    (2, 1 + n, N, C), all rows of each video."""
    bank, prefix = net.reference_pass(latents, tokens)
    return bank, per_video(prefix, latents.shape[0])


def bank_and_prefix(record: dict[str, torch.Tensor], refs: int
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """An IdentityNet record over ``refs`` rows a video -> (bank, motion prefix) as ``reference_pass`` gives them."""
    bank, prefix = split_reference_record(record, refs)
    return bank, per_video(prefix, refs)


def per_video(prefix: dict[str, torch.Tensor], refs: int) -> dict[str, torch.Tensor]:
    """A motion prefix ((videos refs), N, C) -> (videos, refs, N, C), the rows ComfyRun reads per chunk."""
    return {name: rows.unflatten(0, (-1, refs)) for name, rows in prefix.items()}


def hallo_run(bank: dict[str, torch.Tensor], prefix: dict[str, torch.Tensor], masks: dict[str, list[torch.Tensor]],
              audio_tokens: torch.Tensor | None = None, region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
              base_attention=None) -> ComfyRun:
    """The run of one clip: ``reference_pass``'s bank and prefix; the region masks, region -> one (1 or frames, h*w)
    mask a UNet level; the clip's audio tokens (frames, M, D), or None to set per clip (comfyui/model.py
    set_audio_tokens)."""
    return ComfyRun(dict(BRANCHES), audio_tokens=audio_tokens, bank=bank, base_attention=base_attention,
                    videos=dict(VIDEOS), motion_prefix=prefix, region_masks=masks, region_weights=region_weights)


def structure_patch(residual: torch.Tensor) -> StructurePatch:
    """The face locator's ``residual`` (1 or frames, C0, h, w) on the positive chunk only."""
    return StructurePatch(residual, off_chunks=frozenset({NEGATIVE}))
