"""Hallo's state-dict key names -> PortraitTalk's, as data (issue 26; their layout: docs/hallo.md, section 2).

Each mapping renames keys *inside* one module: its own prefix in their ``net.pth`` (``NET_PREFIXES``) is
stripped first. A mapping's entries are dotted prefixes, their name -> ours; ``rename`` applies the longest
that matches and refuses a key that none matches, so a conversion can never drop a tensor silently.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import WeightsError

# hallo/models/image_proj.py:51-54: the same names as IdentityProjection.
IMAGE_PROJECTION = {"proj.": "proj.", "norm.": "norm."}

# hallo/models/audio_proj.py:90-94: three named linears; FlatAudioProjection keeps them in one nn.Sequential
# (ReLU at 1 and 3).
AUDIO_PROJECTION = {"proj1.": "mlp.0.", "proj2.": "mlp.2.", "proj3.": "mlp.4.", "norm.": "norm."}

# hallo/models/face_locator.py:67-92: the layout of diffusers' ControlNetConditioningEmbedding, which our
# structure encoder is, so the names carry over.
FACE_LOCATOR = {"conv_in.": "conv_in.", "blocks.": "blocks.", "conv_out.": "conv_out."}

# One motion module, their `<block>.motion_modules.j.` stripped -> diffusers' AnimateDiffTransformer3D as
# UNetMotionModel names it under the same `<block>.motion_modules.j.` (models/motion_module.py). One transformer
# block (num_transformer_block, configs/inference/default.yaml:62); its two attentions and their LayerNorms
# (hallo/models/motion_module.py:380-385) are a BasicTransformerBlock's attn1/norm1 and attn2/norm2, ff_norm its norm3.
MOTION_MODULE = {
    "temporal_transformer.norm.": "norm.",
    "temporal_transformer.proj_in.": "proj_in.",
    "temporal_transformer.proj_out.": "proj_out.",
    "temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe": "transformer_blocks.0.pos_embed.pe",
    "temporal_transformer.transformer_blocks.0.attention_blocks.0.": "transformer_blocks.0.attn1.",
    "temporal_transformer.transformer_blocks.0.attention_blocks.1.": "transformer_blocks.0.attn2.",
    "temporal_transformer.transformer_blocks.0.norms.0.": "transformer_blocks.0.norm1.",
    "temporal_transformer.transformer_blocks.0.norms.1.": "transformer_blocks.0.norm2.",
    "temporal_transformer.transformer_blocks.0.ff_norm.": "transformer_blocks.0.norm3.",
    "temporal_transformer.transformer_blocks.0.ff.": "transformer_blocks.0.ff.",
}
# Their keys that repeat another of their keys' tensor: each attention holds its own copy of the same sinusoidal
# table (motion_module.py:426-445,488); ours is one per block. Checked equal to the key named, then left out.
MOTION_MODULE_DUPLICATES = {
    "temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe":
        "temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe",
}

# One audio module, their `<block>.audio_modules.j.` stripped -> RegionAudioBlock (models/audio_block.py), which
# holds its one transformer block's layers (transformer_3d.py:90-110, num_layers=1 at unet_3d_blocks.py:362) itself.
# attn2_0/1/2 attend for the full, face and lip masks (attention.py:853-890); zero_conv_* are their 1x1 convs.
AUDIO_BLOCK = {
    "norm.": "norm.", "proj_in.": "proj_in.", "proj_out.": "proj_out.",
    "transformer_blocks.0.norm1.": "norm1.", "transformer_blocks.0.attn1.": "attn1.",
    "transformer_blocks.0.norm2.": "norm2.",
    "transformer_blocks.0.attn2_0.": "attn2.full.", "transformer_blocks.0.attn2_1.": "attn2.face.",
    "transformer_blocks.0.attn2_2.": "attn2.lip.",
    "transformer_blocks.0.zero_conv_full.": "region_out.full.",
    "transformer_blocks.0.zero_conv_face.": "region_out.face.",
    "transformer_blocks.0.zero_conv_lip.": "region_out.lip.",
    "transformer_blocks.0.norm3.": "norm3.", "transformer_blocks.0.ff.": "ff.",
}

# Where each module sits in their net.pth (tests/fixtures/hallo/net_keys.json).
NET_PREFIXES = {"imageproj.": IMAGE_PROJECTION, "audioproj.": AUDIO_PROJECTION, "face_locator.": FACE_LOCATOR}


def rename(state: Mapping[str, object], mapping: Mapping[str, str]) -> dict[str, object]:
    """``state`` with every key renamed by the longest matching prefix of ``mapping``; values untouched."""
    renamed = {}
    for key, value in state.items():
        matches = [prefix for prefix in mapping if key.startswith(prefix)]
        if not matches:
            raise WeightsError(f"no rename for the key {key!r} (known prefixes: {sorted(mapping)})",
                               "strip the module's net.pth prefix first, or add the key to the module's map in "
                               "portraittalk_core/convert/hallo_keys.py")
        prefix = max(matches, key=len)
        new_key = mapping[prefix] + key[len(prefix):]
        if new_key in renamed:
            raise WeightsError(f"two keys rename to {new_key!r}", "fix the module's map in convert/hallo_keys.py")
        renamed[new_key] = value
    return renamed
