"""What a MODEL patched with a Hallo-layout model conditions on in the ComfyUI host (docs/hallo.md; the config
options ``context`` "identity", ``uncond_inputs`` "zero", ``reference_keys`` "denoiser", ``motion_context``
"reference_prefix", ``audio_attention`` "region_blocks"): the CONDITIONING, the reference pass as the run's bank and
motion prefix, the run, and the structure patch. The same computations as the diffusers host's, from the same
modules. No ComfyUI import.

Hallo guides with one scale between two rows (hallo/animate/face_animate.py:415-417), which is what ComfyUI's stock
CFG guider does with the positive and negative CONDITIONING below: the positive chunk gets the face tokens, the
bank, the audio tokens and the face locator's residual; the negative one the projection of a zero face embedding,
no bank, zero audio tokens and no residual, but the same motion prefix and region masks, as theirs.
"""

from __future__ import annotations

import torch
from einops import repeat

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


def face_tokens(net, embedding: torch.Tensor) -> torch.Tensor:
    """(2, K, D): the tokens of a zero face embedding (their unconditional context is the projection of zeros, not
    zeros: face_animate.py:291-298), then those of ``embedding`` (1, E)."""
    embeddings = torch.cat([torch.zeros_like(embedding), embedding])
    return net.identity_projection(embeddings[:, None])


def face_conditioning(tokens: torch.Tensor) -> tuple[list, list]:
    """(positive, negative) CONDITIONING from ``face_tokens``: with config ``context`` "identity" they are the
    UNet's whole cross-attention context, so they stand where the text encoding stands."""
    return [[tokens[1:], {}]], [[tokens[:1], {}]]


def reference_pass(net, latents: torch.Tensor, tokens: torch.Tensor
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(bank, motion prefix) for ``ComfyRun``: IdentityNet at t=0 over ``latents`` (1 + n, C, h, w), the photo's and
    the motion frames', once for each of the two videos with ``face_tokens``' rows tiled as their contexts
    (face_animate.py:332-336,384-395). bank: attn1 layer -> (2, N, C), each video's reference row; prefix: motion
    module -> (2, 1 + n, N, C), all rows of each video."""
    _, record = net.identity_net(repeat(latents, "r c h w -> v r c h w", v=2), tokens, None, None, 0)
    return bank_and_prefix(record, latents.shape[0])


def bank_and_prefix(record: dict[str, torch.Tensor], refs: int
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """An IdentityNet record over ``refs`` rows a video -> (bank, motion prefix) as ``reference_pass`` gives them."""
    bank, prefix = split_reference_record(record, refs)
    return bank, {name: rows.unflatten(0, (-1, refs)) for name, rows in prefix.items()}


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
