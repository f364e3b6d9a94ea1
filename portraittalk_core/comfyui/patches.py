"""PortraitTalk's attention paths as ComfyUI attention patches: the second host of the same weights.

ComfyUI's SD1.5 UNet calls ``patches_replace["attn1" | "attn2"][(block, id, index)](q, k, v, extra_options)``
with q, k, v already projected by the base layer (heads not split) and applies ``to_out`` itself. Each
patch here wraps one of AnimateNet's processor modules and calls its host-independent ``attend``, so the
diffusers host and the ComfyUI host compute the same thing from the same weights.

Per-run data comes in ``extra_options["portraittalk"]`` (a ``ComfyRun``, put into the model's
``transformer_options``). ComfyUI batches guidance branches as chunks of all frames, in the order given by
``extra_options["cond_or_uncond"]``; each chunk's value picks a ``Branch`` (which paths are on). Nothing
here imports ComfyUI, so it is tested without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from einops import repeat

from ..errors import InputError
from ..models.attention import DecoupledCrossAttention, IdentityAttention, attention, transformer_attention_layers
from .blocks import comfy_block_key, layers_per_block


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
    bank: dict[str, torch.Tensor] = field(default_factory=dict)   # layer -> (1, Nb, C)
    identity_strength: float = 1.0
    audio_strength: float = 1.0
    reference_strength: float = 1.0
    # The host's own attention (ComfyUI's optimized_attention) for the base path, so that with every
    # PortraitTalk path off the patched model computes exactly what the unpatched one does.
    base_attention: Callable | None = None

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
        heads, run = extra_options["n_heads"], extra_options.get("portraittalk")
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
        heads, run = extra_options["n_heads"], extra_options.get("portraittalk")
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


def attention_patches(animate_net) -> dict[tuple[str, str, int, int], _Patch]:
    """One ComfyUI patch per AnimateNet attention layer, keyed as ComfyUI looks them up."""
    per_level = layers_per_block(animate_net.unet)
    patches = {}
    for name, layer in transformer_attention_layers(animate_net.unet).items():
        processor = layer.processor
        patch = (IdentityAttentionPatch(processor) if isinstance(processor, IdentityAttention)
                 else DecoupledCrossAttentionPatch(processor))
        patches[comfy_block_key(name, per_level)] = patch
    return patches
