"""Where diffusers' UNet layers sit in ComfyUI's: the block numbering of the original LDM code, written once.

ComfyUI numbers an SD-style UNet's blocks as the LDM code does: input block 0 is conv_in and every down level has
``layers_per_block`` layers plus one downsampler; each up level has one layer more than a down level and no separate
upsampler block. The attention patches (patches.py) and the temporal modules (host.py) are placed by this numbering.
Nothing here imports ComfyUI.
"""

from __future__ import annotations


def layers_per_block(unet) -> int:
    """The UNet's layers per down level (diffusers allows a list; SD-style UNets have one number for all)."""
    per_level = unet.config.layers_per_block
    return per_level if isinstance(per_level, int) else per_level[0]


def ldm_block(part: str, level: int, layer: int, per_level: int) -> tuple[str, int]:
    """diffusers' (down_blocks | mid_block | up_blocks, level, layer within the level) -> ComfyUI's
    (input | middle | output, block id)."""
    if part == "down_blocks":
        return "input", level * (per_level + 1) + layer + 1
    if part == "up_blocks":
        return "output", level * (per_level + 1) + layer
    if part == "mid_block":
        return "middle", 0
    raise ValueError(f"not a UNet block: {part}")


def comfy_block_key(layer_name: str, per_level: int) -> tuple[str, str, int, int]:
    """diffusers attention layer name (``down_blocks.1.attentions.0.transformer_blocks.0.attn2``) ->
    (attn1 | attn2, ComfyUI block, block id, transformer index), the key ComfyUI looks attention patches up by."""
    parts = layer_name.split(".")
    kind, index = parts[-1], int(parts[-2])
    if parts[0] not in ("down_blocks", "up_blocks", "mid_block"):
        raise ValueError(f"not a UNet transformer attention layer: {layer_name}")
    level, layer = (0, 0) if parts[0] == "mid_block" else (int(parts[1]), int(parts[3]))
    return (kind, *ldm_block(parts[0], level, layer, per_level), index)


def comfy_unet_config(unet: dict) -> dict:
    """A diffusers UNet2DConditionModel config -> ComfyUI's (LDM) UNet config for the same network."""
    channels = list(unet["block_out_channels"])
    depth = [1 if "CrossAttn" in t else 0 for t in unet["down_block_types"]]
    per_level = unet["layers_per_block"]
    return {
        "context_dim": unet["cross_attention_dim"], "model_channels": channels[0], "in_channels": unet["in_channels"],
        "out_channels": unet["out_channels"], "use_linear_in_transformer": False, "adm_in_channels": None,
        "use_temporal_attention": False, "num_res_blocks": [per_level] * len(channels),
        "channel_mult": [c // channels[0] for c in channels],
        # one entry a layer, not a level: ComfyUI's model detection counts each res block's transformers
        "transformer_depth": [d for d in depth for _ in range(per_level)],
        "transformer_depth_output": [d for d in depth for _ in range(per_level + 1)],
        "transformer_depth_middle": 1, "num_heads": unet["attention_head_dim"], "num_head_channels": -1,
        "image_size": 32, "use_spatial_transformer": True, "legacy": False, "dims": 2,
    }
