"""PortraitTalk's attention paths as ComfyUI attention patches: the second host of the same weights.

ComfyUI's SD1.5 UNet calls ``patches_replace["attn1" | "attn2"][(block, id, index)](q, k, v, extra_options)``
with q, k, v already projected by the base layer (heads not split) and applies ``to_out`` itself. Each
patch here wraps one of AnimateNet's processor modules and calls its host-independent ``attend``, so the
diffusers host and the ComfyUI host compute the same thing from the same weights.

Per-run data comes in ``extra_options["portraittalk"]`` (a ``ComfyRun``, put into the model's
``transformer_options``). ComfyUI batches guidance branches as chunks of all frames, in the order given by
``extra_options["cond_or_uncond"]``; each chunk's value picks a ``Branch`` (which paths are on). Nothing
here imports ComfyUI, so it is tested without it.

A model whose bank is read through the denoiser's own ``attn1`` projections (config ``reference_keys``
"denoiser", Hallo's reader) gets two patches instead of one: ``BankTokensPatch`` (ComfyUI's ``attn1_patch``) puts
the bank's tokens after each row's own, so that ComfyUI's attn1 projects [frame; bank] with its live ``to_k`` and
``to_v`` (a LoRA upstream included), and ``SharedBankAttentionPatch`` (the ``attn1`` replace) attends over them with
the bank switched off for the rows whose branch has no identity. A plain ``attn2`` (config ``context`` "identity":
the identity tokens are the CONDITIONING itself) is left to ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from einops import repeat

from ..errors import InputError
from ..models.attention import (DecoupledCrossAttention, IdentityAttention, attention, bank_attention,
                                transformer_attention_layers)
from ..models.motion_module import prefix_frames_from_bank
from .blocks import comfy_block_key, layers_per_block

KEY = "portraittalk"   # the ComfyRun's key in the MODEL's transformer_options


@dataclass(frozen=True)
class Branch:
    identity: bool = False
    audio: bool = False


@dataclass
class ComfyRun:
    """What one sampling run conditions on. Branches are keyed by ComfyUI's ``cond_or_uncond`` values."""

    branches: dict[int, Branch]
    identity_tokens: torch.Tensor | None = None      # (1, K, D)
    audio_tokens: torch.Tensor | None = None         # (frames, M, D) for the frames being sampled
    bank: dict[str, torch.Tensor] = field(default_factory=dict)   # layer -> (1 or videos, Nb, C)
    identity_strength: float = 1.0
    audio_strength: float = 1.0
    reference_strength: float = 1.0
    # The host's own attention (ComfyUI's optimized_attention) for the base path, so that with every
    # PortraitTalk path off the patched model computes exactly what the unpatched one does.
    base_attention: Callable | None = None
    # Hallo's layout (docs/hallo.md), unused by PortraitTalk's own: the reference pass ran over several videos
    # (Hallo's [uncond, cond]) and each ComfyUI chunk reads its video's rows of the bank and of the motion prefix.
    videos: dict[int, int] = field(default_factory=dict)           # chunk -> video; chunks not listed read video 0
    motion_prefix: dict[str, torch.Tensor] | None = None           # motion module -> (videos, 1 + n, N, C)
    region_masks: dict[str, list[torch.Tensor]] | None = None      # region -> one (1 or frames, h*w) mask a level
    region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)   # (full, face, lip)

    def attention(self, q, k, v, heads):
        return (self.base_attention or attention)(q, k, v, heads)

    def __deepcopy__(self, memo):  # ModelPatcher.clone deep-copies model_options: share, don't copy tensors
        return self

    def scales(self, chunks: list[int], rows: int, path: str, strength: float, device, dtype) -> torch.Tensor:
        """Per-row strength of one path: the path's strength for chunks whose branch has it on, else 0."""
        per_chunk = torch.tensor([strength if getattr(self.branches.get(c, Branch()), path) else 0.0
                                  for c in chunks], device=device, dtype=dtype)
        return repeat(per_chunk, "c -> (c f)", f=rows // len(chunks))

    def audio_rows(self, chunks: list[int], rows: int, dtype) -> torch.Tensor | None:
        if self.audio_tokens is None:
            return None
        frames = rows // len(chunks)
        if self.audio_tokens.shape[0] != frames:
            raise InputError(f"the audio features cover {self.audio_tokens.shape[0]} frames but the latent batch has "
                             f"{frames}", "sample as many latent frames as the audio has (use the audio's frame count)")
        return repeat(self.audio_tokens.to(dtype), "f m d -> (c f) m d", c=len(chunks))

    def bank_rows(self, layer: str, chunks: list[int], rows: int, tiled: bool) -> torch.Tensor:
        """(rows, Nb, C): the bank of ``layer`` each row of the batch reads. Row (chunk c, frame f) is row
        k = video(c) * frames + f of the reference pass's (video, frame) batch and reads video k % videos when
        ``tiled`` (Hallo's reader, hallo/models/mutual_self_attention.py:235-247; IdentityAttention's
        ``tiled_bank``), else its own video."""
        bank = self.bank[layer]
        frames = rows // len(chunks)
        videos = [self.videos.get(c, 0) for c in chunks]
        index = [(v * frames + f) % bank.shape[0] if tiled else v for v in videos for f in range(frames)]
        return bank[torch.tensor(index, device=bank.device)]

    def prefix_rows(self, module: str, chunks: list[int], height: int, width: int) -> torch.Tensor | None:
        """((chunks n), C, h, w): the motion frames each chunk's video puts before its frames in ``module``
        (rows 1.. of its video in the reference pass), or None where the run has none for it."""
        if not self.motion_prefix or module not in self.motion_prefix:
            return None
        rows = self.motion_prefix[module][[self.videos.get(c, 0) for c in chunks]]
        return prefix_frames_from_bank(rows.flatten(0, 1), len(chunks), height, width)

    def region_audio_rows(self, chunks: list[int], rows: int, device, dtype) -> torch.Tensor:
        """((chunks frames), M, D): the audio tokens for the chunks whose branch has audio (times the audio strength),
        zeros for the others (config ``uncond_inputs`` "zero": Hallo's unconditional row still runs its audio blocks,
        on zero tokens, hallo/animate/face_animate.py:377-378)."""
        tokens = self.audio_rows(chunks, rows, dtype)
        if tokens is None:
            raise InputError("this model's audio blocks need audio tokens and none were set",
                             "connect the audio features (PortraitTalk Audio Encode)")
        scale = self.scales(chunks, rows, "audio", self.audio_strength, tokens.device, dtype)
        return (tokens * scale.view(-1, 1, 1)).to(device)

    def region_mask_rows(self, region: str, level: int, chunks: list[int], rows: int) -> torch.Tensor:
        """((chunks frames), h*w): one region's mask at one UNet level for every row (the same for every branch, as
        Hallo repeats it for both rows, face_animate.py:345-359)."""
        if self.region_masks is None:
            raise InputError("this model's audio blocks need the photo's region masks and none were set",
                             "prepare the reference photo for this model (its face, face and lip regions)")
        mask = self.region_masks[region][level]
        if mask.shape[0] == 1:
            return mask.expand(rows, -1)
        return repeat(mask, "f n -> (c f) n", c=len(chunks))


class _Patch:
    def __init__(self, processor):
        self.processor = processor

    def __deepcopy__(self, memo):
        return self

    def to(self, device):  # ComfyUI moves patches with the model (model_patches_to)
        self.processor.to(device)
        return self


class IdentityAttentionPatch(_Patch):
    """attn1 replace: self-attention extended with the reference bank of the same layer."""

    processor: IdentityAttention

    def __call__(self, q, k, v, extra_options):
        heads, run = extra_options["n_heads"], extra_options.get(KEY)
        bank = None if run is None else run.bank.get(self.processor.name)
        if bank is None:
            return attention(q, k, v, heads)
        chunks = list(extra_options["cond_or_uncond"])
        scale = run.scales(chunks, q.shape[0], "identity", run.reference_strength, q.device, q.dtype)
        if not bool((scale != 0).any()):
            return run.attention(q, k, v, heads)
        bank = bank.to(q.device, q.dtype).expand(q.shape[0], -1, -1)
        return self.processor.attend(q, k, v, bank, scale, heads)


class DecoupledCrossAttentionPatch(_Patch):
    """attn2 replace: text attention plus the identity and per-frame audio branches."""

    processor: DecoupledCrossAttention

    def __call__(self, q, k, v, extra_options):
        heads, run = extra_options["n_heads"], extra_options.get(KEY)
        if run is None:
            return attention(q, k, v, heads)
        out = run.attention(q, k, v, heads)
        chunks, rows = list(extra_options["cond_or_uncond"]), q.shape[0]
        tokens = (None if run.identity_tokens is None
                  else run.identity_tokens.to(q.device, q.dtype).expand(rows, -1, -1))
        id_scale = run.scales(chunks, rows, "identity", run.identity_strength, q.device, q.dtype)
        audio_scale = run.scales(chunks, rows, "audio", run.audio_strength, q.device, q.dtype)
        audio = run.audio_rows(chunks, rows, q.dtype)
        audio = None if audio is None else audio.to(q.device)
        return self.processor.attend(q, out, tokens, id_scale, audio, audio_scale, heads)


class BankTokensPatch:
    """attn1_patch (ComfyUI calls it for every attn1): the bank's tokens after each row's own, in the layers whose
    bank goes through the denoiser's own projections, so that attn1 computes keys and values of [frame; bank] as
    Hallo's reader does (hallo/models/mutual_self_attention.py:253-263). Nothing is added to a batch where no row
    reads the bank (the unconditional branch alone)."""

    def __init__(self, layers: dict[tuple[str, int, int], IdentityAttention]):
        self.layers = layers   # (ComfyUI block, id, transformer index) -> the layer's processor

    def __deepcopy__(self, memo):
        return self

    def to(self, device):
        return self

    def __call__(self, n, context, value, extra_options):
        run = extra_options.get(KEY)
        block = extra_options.get("block")
        processor = None if block is None else self.layers.get((*block, extra_options.get("block_index", 0)))
        if run is None or processor is None or run.bank.get(processor.name) is None:
            return n, context, value
        chunks, rows = list(extra_options["cond_or_uncond"]), n.shape[0]
        if not any(run.branches.get(c, Branch()).identity for c in chunks):
            return n, context, value
        bank = run.bank_rows(processor.name, chunks, rows, processor.tiled_bank).to(n.device, n.dtype)
        return n, torch.cat([context, bank], dim=1), torch.cat([value, bank], dim=1)


class SharedBankAttentionPatch(_Patch):
    """attn1 replace beside ``BankTokensPatch``: keys and values come projected from [frame; bank]; rows whose branch
    has no identity ignore the bank (Hallo's unconditional rows: plain self-attention, :158-166)."""

    processor: IdentityAttention

    def __call__(self, q, k, v, extra_options):
        heads, run = extra_options["n_heads"], extra_options.get(KEY)
        own = q.shape[1]
        if run is None or k.shape[1] == own:
            return attention(q, k, v, heads)
        scale = run.scales(list(extra_options["cond_or_uncond"]), q.shape[0], "identity", run.reference_strength,
                           q.device, q.dtype)
        return bank_attention(q, k, v, own, scale, heads)


def _plain_cross_attention(processor) -> bool:
    return isinstance(processor, DecoupledCrossAttention) and processor.to_k_id is None \
        and processor.to_k_audio is None


def attention_patches(animate_net) -> dict[tuple[str, str, int, int], _Patch]:
    """One ComfyUI patch per AnimateNet attention layer, keyed as ComfyUI looks them up; none where the layer is
    the UNet's own cross-attention unchanged (config ``context`` "identity")."""
    per_level = layers_per_block(animate_net.unet)
    patches = {}
    for name, layer in transformer_attention_layers(animate_net.unet).items():
        processor = layer.processor
        if _plain_cross_attention(processor):
            continue
        if isinstance(processor, IdentityAttention):
            patch = (SharedBankAttentionPatch(processor) if processor.shared is not None
                     else IdentityAttentionPatch(processor))
        else:
            patch = DecoupledCrossAttentionPatch(processor)
        patches[comfy_block_key(name, per_level)] = patch
    return patches


def bank_tokens_patch(animate_net) -> BankTokensPatch | None:
    """The attn1_patch for the layers that read their bank through attn1's own projections; None if none does."""
    per_level = layers_per_block(animate_net.unet)
    layers = {comfy_block_key(name, per_level)[1:]: layer.processor
              for name, layer in transformer_attention_layers(animate_net.unet).items()
              if isinstance(layer.processor, IdentityAttention) and layer.processor.shared is not None}
    return BankTokensPatch(layers) if layers else None
