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
    # Hallo's layout (config motion_context "reference_prefix", audio_attention "region_blocks"):
    # motion module name -> the reference pass's rows ((videos (1+n)), h*w, C) whose rows 1..n prefix the clip;
    motion_prefix: dict[str, torch.Tensor] | None = None
    # region -> one mask per UNet level, ((videos * frames), h*w) in [0, 1]; the (full, face, lip) weights.
    region_masks: dict[str, list[torch.Tensor]] | None = None
    region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _per_frame(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Expand a per-video tensor (videos, ...) to the UNet's (videos * frames, ...) batch."""
    return repeat(x, "b ... -> (b f) ...", f=num_frames)


def _active(scale: torch.Tensor | None) -> bool:
    return scale is not None and bool((scale != 0).any())


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return rearrange(x, "b n (h d) -> b h n d", h=heads)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, mask=None) -> torch.Tensor:
    """Multi-head scaled dot-product attention on (rows, tokens, heads * dim) tensors, laid out exactly as
    diffusers' ``AttnProcessor2_0`` does it (so that, with PortraitTalk's paths off, results are bitwise equal)."""
    out = F.scaled_dot_product_attention(_heads(query, heads), _heads(key, heads), _heads(value, heads),
                                         attn_mask=mask, dropout_p=0.0, is_causal=False)
    return rearrange(out, "b h n d -> b n (h d)").to(query.dtype)


def bank_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, own_tokens: int,
                   bank_scale: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention over keys and values already projected from [own tokens; reference bank tokens] (rows, N + Nb, C),
    the bank's logits biased by ``log(bank_scale)`` per row (rows,): 1 -> plain joint attention, 0 -> -inf (the
    row ignores the bank). IdentityAttention's core, and the ComfyUI host's, whose attn1 projects the joined tokens
    itself."""
    mask = torch.zeros(query.shape[0], 1, 1, key.shape[1], dtype=query.dtype, device=query.device)
    mask[..., own_tokens:] = bank_scale.to(torch.float32).log().to(query.dtype).view(-1, 1, 1, 1)
    return attention(query, key, value, heads, mask)


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
    """IdentityNet self-attention: unchanged attention that records its input into the bank.

    ``bank_dtype``: the dtype the bank is stored in (None: as computed); Hallo's reader casts it to float16, fp32
    runs included (hallo/models/mutual_self_attention.py:404,453), and its outputs depend on that rounding."""

    def __init__(self, name: str, bank_dtype: torch.dtype | None = None):
        super().__init__()
        self.name = name
        self.bank_dtype = bank_dtype

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, portraittalk: AttentionContext | None = None, **kwargs):
        _check_plain(attn)
        if portraittalk is not None and portraittalk.record is not None:
            recorded = rearrange(hidden_states, "(b r) n c -> b (r n) c", r=portraittalk.num_frames)
            portraittalk.record[self.name] = recorded if self.bank_dtype is None else recorded.to(self.bank_dtype)
        out = attention(attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states), attn.heads)
        return _output(attn, out, hidden_states)


class IdentityAttention(nn.Module):
    """AnimateNet self-attention over its own tokens and the reference bank of the same layer.

    ``shared``: the bank goes through the layer's own ``to_k``/``to_v`` instead of trainable copies (Hallo's
    reader: keys and values of [frame; reference] tokens from the denoiser's attn1,
    hallo/models/mutual_self_attention.py:253-263); the processor then has no parameters."""

    def __init__(self, name: str, attn, shared: bool = False, tiled_bank: bool = False):
        """``tiled_bank``: each batch row k of the (videos * frames) batch reads video k % videos's bank instead of
        its own video's (config ``reference_frames`` "tiled"), as Hallo's reader lays its bank rows out
        (hallo/models/mutual_self_attention.py:235-247)."""
        super().__init__()
        self.name = name
        self.tiled_bank = tiled_bank
        # A plain attribute, not a submodule: the layer is the denoiser's own, already in its state dict.
        object.__setattr__(self, "shared", attn if shared else None)
        if not shared:
            self.to_k_ref = _clone_linear(attn.to_k)
            self.to_v_ref = _clone_linear(attn.to_v)

    def _bank_keys(self, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared is not None:
            return self.shared.to_k(bank), self.shared.to_v(bank)
        return self.to_k_ref(bank), self.to_v_ref(bank)

    def attend(self, query, key, value, bank: torch.Tensor | None, bank_scale: torch.Tensor | None,
               heads: int) -> torch.Tensor:
        """Host-independent core. query/key/value: the base layer's projections (rows, N, C); bank: the
        reference hidden states for each row (rows, Nb, C); bank_scale: strength per row (rows,)."""
        if bank is None or not _active(bank_scale):
            return attention(query, key, value, heads)
        tokens = key.shape[1]
        bank_key, bank_value = self._bank_keys(bank)
        return bank_attention(query, torch.cat([key, bank_key], dim=1), torch.cat([value, bank_value], dim=1),
                              tokens, bank_scale, heads)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, portraittalk: AttentionContext | None = None, **kwargs):
        _check_plain(attn)
        ctx = portraittalk
        bank = scale = None
        if ctx is not None and ctx.bank is not None and ctx.bank.get(self.name) is not None:
            bank = ctx.bank[self.name]
            videos = ctx.bank_scale.shape[0]
            bank = bank.expand(videos, -1, -1) if bank.shape[0] == 1 else bank
            # Tiled: the rows repeat as (frame, video), not (video, frame); the scale below stays per video, so a
            # row's bank may be another video's while its strength is its own, as in their reader.
            bank = (repeat(bank, "b ... -> (f b) ...", f=ctx.num_frames) if self.tiled_bank
                    else _per_frame(bank, ctx.num_frames))
            bank = bank.to(hidden_states.dtype)
            scale = _per_frame(ctx.bank_scale, ctx.num_frames)
        out = self.attend(attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states), bank, scale,
                          attn.heads)
        return _output(attn, out, hidden_states)


class DecoupledCrossAttention(nn.Module):
    """Text cross-attention plus identity and audio branches with their own keys, values and scales."""

    def __init__(self, name: str, attn, audio: bool, identity: bool = True):
        """``identity`` False: no identity branch (the identity tokens are the layer's own context instead, as
        Hallo's image tokens are: config ``context`` "identity"); with ``audio`` False too this is plain
        cross-attention, parameter-free."""
        super().__init__()
        self.name = name
        self.to_k_id = _clone_linear(attn.to_k) if identity else None
        self.to_v_id = _clone_linear(attn.to_v) if identity else None
        self.to_k_audio = _clone_linear(attn.to_k) if audio else None
        self.to_v_audio = _clone_linear(attn.to_v) if audio else None

    def attend(self, query, base_out, identity_tokens, identity_scale, audio_tokens, audio_scale,
               heads: int) -> torch.Tensor:
        """Host-independent core: ``base_out`` (the text attention) plus the identity and audio branches.
        Tokens are per row (rows, K, D) and scales per row (rows,); a branch whose scales are all 0 is skipped."""
        out = base_out
        if self.to_k_id is not None and identity_tokens is not None and _active(identity_scale):
            branch = attention(query, self.to_k_id(identity_tokens), self.to_v_id(identity_tokens), heads)
            out = out + identity_scale.to(query.dtype).view(-1, 1, 1) * branch
        if self.to_k_audio is not None and audio_tokens is not None and _active(audio_scale):
            branch = attention(query, self.to_k_audio(audio_tokens), self.to_v_audio(audio_tokens), heads)
            out = out + audio_scale.to(query.dtype).view(-1, 1, 1) * branch
        return out

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, portraittalk: AttentionContext | None = None, **kwargs):
        _check_plain(attn)
        if attention_mask is not None:
            raise NotImplementedError("PortraitTalk cross-attention does not take a text attention mask")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.to_q(hidden_states)
        out = attention(query, attn.to_k(context), attn.to_v(context), attn.heads)
        ctx = portraittalk
        if ctx is not None:
            frames = ctx.num_frames
            tokens = None if ctx.identity_tokens is None else _per_frame(ctx.identity_tokens.to(query.dtype), frames)
            scale = None if ctx.identity_scale is None else _per_frame(ctx.identity_scale, frames)
            audio_scale = None if ctx.audio_scale is None else _per_frame(ctx.audio_scale, frames)
            audio = None if ctx.audio_tokens is None else ctx.audio_tokens.to(query.dtype)
            out = self.attend(query, out, tokens, scale, audio, audio_scale, attn.heads)
        return _output(attn, out, hidden_states)


def transformer_attention_layers(unet) -> dict[str, object]:
    """The spatial transformer attention layers of a UNet (not the motion modules'), by name."""
    return {name: module for name, module in unet.named_modules()
            if name.endswith((".attn1", ".attn2")) and ".transformer_blocks." in name
            and "motion_modules" not in name}
