"""PortraitTalk's attention processors for diffusers ``Attention`` layers.

Three processors, each a drop-in for diffusers' ``AttnProcessor2_0`` on one kind of layer:

- ``ReferenceRecorder`` (IdentityNet, self-attention ``attn1``): plain self-attention that also
  writes the hidden states entering it into the reference bank, under the layer's name.
- ``IdentityAttention`` (AnimateNet, ``attn1``): self-attention whose keys and values are extended
  with the reference bank of the same layer (all references concatenated: several references come
  for free). The bank goes through its own trainable key/value projections, initialised from the
  frozen base ones. Its strength enters as an additive logit bias ``log(strength)`` on the bank
  keys, so strength 1 is plain joint attention, and a bias of ``-inf`` switches the bank off for
  one sample of a batch (how classifier-free guidance drops the identity in a batched call).
- ``DecoupledCrossAttention`` (both nets, ``attn2``): the base text cross-attention plus separate
  attention branches for identity tokens and (AnimateNet only) per-frame audio tokens, each with its
  own key/value projections and a per-sample scale, summed before the output projection as in
  IP-Adapter.

Everything a call needs (tokens, scales, bank) comes in one ``AttentionContext`` passed through
diffusers' ``cross_attention_kwargs={"portraittalk": ctx}``. With every scale at zero and no bank,
each processor performs exactly the operations of ``AttnProcessor2_0``, so the patched UNet's output
equals the base UNet's bit for bit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


@dataclass
class AttentionContext:
    """Per-call conditioning for the processors.

    The UNet's batch is ``videos * num_frames``; in IdentityNet the "frames" are a video's reference
    images, so the bank it records holds all references of one identity side by side.
    """

    num_frames: int = 1
    identity_tokens: torch.Tensor | None = None   # (videos, K, D)
    identity_scale: torch.Tensor | None = None    # (videos,) per-sample strength; 0 = off
    audio_tokens: torch.Tensor | None = None      # (videos * frames, M, D)
    audio_scale: torch.Tensor | None = None       # (videos,)
    bank: dict[str, torch.Tensor] | None = None   # layer name -> (videos or 1, R * N, C)
    bank_scale: torch.Tensor | None = None        # (videos,) strength of the bank; 0 = off
    record: dict[str, torch.Tensor] | None = field(default=None)  # IdentityNet writes the bank here


def _per_frame(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Expand a per-video tensor (videos, ...) to the UNet's (videos * frames, ...) batch."""
    return repeat(x, "b ... -> (b f) ...", f=num_frames)


def _active(scale: torch.Tensor | None) -> bool:
    return scale is not None and bool((scale != 0).any())


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return rearrange(x, "b n (h d) -> b h n d", h=heads)


def _attend(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask=None) -> torch.Tensor:
    """Multi-head scaled dot-product attention, laid out exactly as ``AttnProcessor2_0`` does it."""
    out = F.scaled_dot_product_attention(_heads(query, attn.heads), _heads(key, attn.heads),
                                         _heads(value, attn.heads), attn_mask=mask, dropout_p=0.0,
                                         is_causal=False)
    return rearrange(out, "b h n d -> b n (h d)").to(query.dtype)


def _output(attn, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    hidden = attn.to_out[1](attn.to_out[0](hidden))
    if attn.residual_connection:
        hidden = hidden + residual
    return hidden / attn.rescale_output_factor


def _check_plain(attn) -> None:
    # SD1.5 transformer blocks have none of these; refuse rather than silently compute something else.
    if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_q is not None:
        raise NotImplementedError("PortraitTalk processors support SD1.5-style attention layers only")


def _clone_linear(layer: nn.Linear) -> nn.Linear:
    clone = copy.deepcopy(layer)
    clone.requires_grad_(True)
    return clone


class ReferenceRecorder(nn.Module):
    """IdentityNet self-attention: unchanged attention that records its input into the bank."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, portraittalk: AttentionContext | None = None, **kwargs):
        _check_plain(attn)
        if portraittalk is not None and portraittalk.record is not None:
            portraittalk.record[self.name] = rearrange(
                hidden_states, "(b r) n c -> b (r n) c", r=portraittalk.num_frames)
        out = _attend(attn, attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states))
        return _output(attn, out, hidden_states)


class IdentityAttention(nn.Module):
    """AnimateNet self-attention over its own tokens and the reference bank of the same layer."""

    def __init__(self, name: str, attn):
        super().__init__()
        self.name = name
        self.to_k_ref = _clone_linear(attn.to_k)
        self.to_v_ref = _clone_linear(attn.to_v)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, portraittalk: AttentionContext | None = None, **kwargs):
        _check_plain(attn)
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        ctx = portraittalk
        bank = None if ctx is None or ctx.bank is None else ctx.bank.get(self.name)
        if bank is None or not _active(ctx.bank_scale):
            return _output(attn, _attend(attn, query, key, value), hidden_states)

        videos = ctx.bank_scale.shape[0]
        if bank.shape[0] == 1:
            bank = bank.expand(videos, -1, -1)
        bank = _per_frame(bank.to(hidden_states.dtype), ctx.num_frames)
        key = torch.cat([key, self.to_k_ref(bank)], dim=1)
        value = torch.cat([value, self.to_v_ref(bank)], dim=1)
        # log(strength) on the bank's logits: 1 -> plain joint attention, 0 -> -inf (bank ignored).
        bias = _per_frame(ctx.bank_scale.to(torch.float32).log(), ctx.num_frames).to(query.dtype)
        mask = torch.zeros(bias.shape[0], 1, 1, key.shape[1], dtype=query.dtype, device=query.device)
        mask[..., hidden_states.shape[1]:] = bias.view(-1, 1, 1, 1)
        return _output(attn, _attend(attn, query, key, value, mask), hidden_states)


class DecoupledCrossAttention(nn.Module):
    """Text cross-attention plus identity and audio branches with their own keys, values and scales."""

    def __init__(self, name: str, attn, audio: bool):
        super().__init__()
        self.name = name
        self.to_k_id = _clone_linear(attn.to_k)
        self.to_v_id = _clone_linear(attn.to_v)
        self.to_k_audio = _clone_linear(attn.to_k) if audio else None
        self.to_v_audio = _clone_linear(attn.to_v) if audio else None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, portraittalk: AttentionContext | None = None, **kwargs):
        _check_plain(attn)
        if attention_mask is not None:
            raise NotImplementedError("PortraitTalk cross-attention does not take a text attention mask")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.to_q(hidden_states)
        out = _attend(attn, query, attn.to_k(context), attn.to_v(context))

        ctx = portraittalk
        if ctx is not None and ctx.identity_tokens is not None and _active(ctx.identity_scale):
            tokens = _per_frame(ctx.identity_tokens.to(query.dtype), ctx.num_frames)
            scale = _per_frame(ctx.identity_scale.to(query.dtype), ctx.num_frames).view(-1, 1, 1)
            out = out + scale * _attend(attn, query, self.to_k_id(tokens), self.to_v_id(tokens))
        if (ctx is not None and self.to_k_audio is not None and ctx.audio_tokens is not None
                and _active(ctx.audio_scale)):
            tokens = ctx.audio_tokens.to(query.dtype)
            scale = _per_frame(ctx.audio_scale.to(query.dtype), ctx.num_frames).view(-1, 1, 1)
            out = out + scale * _attend(attn, query, self.to_k_audio(tokens), self.to_v_audio(tokens))
        return _output(attn, out, hidden_states)


def transformer_attention_layers(unet) -> dict[str, object]:
    """The spatial transformer attention layers of a UNet (not the motion modules'), by name."""
    return {name: module for name, module in unet.named_modules()
            if name.endswith((".attn1", ".attn2")) and ".transformer_blocks." in name
            and "motion_modules" not in name}
