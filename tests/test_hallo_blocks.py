"""Hallo's per-block modules on ours (issue 26): the motion module and the audio block, each loaded from its golden
fixture through the key map in convert/hallo_keys.py.

The fixtures (tests/fixtures/hallo/NAME.safetensors) were written by tools/hallo_reference.py from Hallo's own code:
``in.*`` the call's inputs, ``out.*`` its outputs, ``state.*`` the module's weights under their key names; NAME.json
gives the constructor arguments, the call and the quirks. Each test also shows that leaving the mirrored quirk out
lands far outside the bound, so the comparison can fail.
"""

from __future__ import annotations

import torch
from diffusers.models.unets.unet_motion_model import MotionModules
from einops import rearrange

from hallo_fixtures import BOUND, WRONG, fixture, max_diff
from portraittalk_core.convert import hallo_keys
from portraittalk_core.models.audio_block import REGIONS, RegionAudioBlock
from portraittalk_core.models.motion_module import (FrameGroupNorm, normalise_per_frame, prefix_frames_from_bank,
                                                    with_motion_prefix)

def frames_in_batch(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b c f h w -> (b f) c h w")


def frames_on_axis(x: torch.Tensor, videos: int) -> torch.Tensor:
    return rearrange(x, "(b f) c h w -> b c f h w", b=videos)


def motion_module_from_fixture(state: dict, args: dict):
    """diffusers' motion module built as MotionAdapter/UNetMotionModel build theirs, with Hallo's weights."""
    module = MotionModules(args["in_channels"], layers_per_block=1,
                           transformer_layers_per_block=args["num_transformer_block"],
                           num_attention_heads=args["num_attention_heads"], norm_num_groups=32,
                           max_seq_length=args["temporal_position_encoding_max_len"]).motion_modules[0]
    kept = dict(state)
    for duplicate, original in hallo_keys.MOTION_MODULE_DUPLICATES.items():
        assert torch.equal(kept.pop(duplicate), state[original])
    renamed = hallo_keys.rename(kept, hallo_keys.MOTION_MODULE)
    # Their sinusoidal table is the one diffusers computes (so converting it changes nothing).
    assert torch.equal(renamed["transformer_blocks.0.pos_embed.pe"],
                       module.state_dict()["transformer_blocks.0.pos_embed.pe"])
    module.load_state_dict(renamed)  # strict: every key of ours filled, none of theirs left over
    return module.eval()


def test_motion_module_with_per_frame_norm_and_prefix_matches_hallo():
    inputs, outputs, state, meta = fixture("motion_module")
    assert meta["encoder_hidden_states_unused"] and meta["constructor"]["temporal_attention_dim_div"] == 1
    module = motion_module_from_fixture(state, meta["constructor"])
    hidden = inputs["hidden_states"]
    videos, frames = hidden.shape[0], hidden.shape[2]
    prefix = frames_in_batch(inputs["motion_frames"])

    with torch.no_grad():
        # diffusers' own norm, over all frames together: the quirk that matters.
        cross_frame = frames_on_axis(module(frames_in_batch(hidden), num_frames=frames), videos)
        assert max_diff(cross_frame, outputs["without_prefix"]) > WRONG

        normalise_per_frame(module)
        assert isinstance(module.norm, FrameGroupNorm)
        alone = frames_on_axis(module(frames_in_batch(hidden), num_frames=frames), videos)
        assert max_diff(alone, outputs["without_prefix"]) <= BOUND

        joined = torch.cat([inputs["motion_frames"], hidden], dim=2)
        everything = frames_on_axis(module(frames_in_batch(joined), num_frames=joined.shape[2]), videos)
        assert max_diff(everything, outputs["with_prefix_all"]) <= BOUND

        prefixed = frames_on_axis(with_motion_prefix(module, frames_in_batch(hidden), prefix, frames), videos)
        assert max_diff(prefixed, outputs["with_prefix"]) <= BOUND
        # The prefix changes the clip's frames (positions and attention), so it cannot be left out.
        assert max_diff(alone, outputs["with_prefix"]) > WRONG


def test_prefix_frames_come_from_the_reference_bank_rows_after_the_reference():
    inputs, _, _, _ = fixture("motion_module")
    videos, _, _, height, width = inputs["hidden_states"].shape
    frames = prefix_frames_from_bank(inputs["reference_bank"], videos, height, width)
    assert torch.equal(frames_on_axis(frames, videos), inputs["motion_frames"])


def test_region_audio_block_matches_hallo():
    inputs, outputs, state, meta = fixture("audio_block")
    args = meta["constructor"]
    block = RegionAudioBlock(args["in_channels"], args["num_attention_heads"], args["attention_head_dim"],
                             args["cross_attention_dim"], args["norm_num_groups"]).eval()
    block.load_state_dict(hallo_keys.rename(state, hallo_keys.AUDIO_BLOCK))
    hidden = inputs["hidden_states"]
    videos = hidden.shape[0]
    audio = rearrange(inputs["audio_embedding"], "b f m d -> (b f) m d")  # transformer_3d.py:183-187
    level = meta["level"]  # the block reads its own level of the 4-level mask lists (attention.py:853)
    masks = {region: inputs[f"{region}_mask.{level}"] for region in REGIONS}

    with torch.no_grad():
        sample = frames_on_axis(block(frames_in_batch(hidden), audio, masks), videos)
        assert max_diff(sample, outputs["sample"]) <= BOUND
        weighted = frames_on_axis(block(frames_in_batch(hidden), audio, masks,
                                        tuple(meta["motion_scale_weighted"])), videos)
        assert max_diff(weighted, outputs["sample_weighted"]) <= BOUND

        # The masks and the weights both matter at this scale.
        assert max_diff(outputs["sample"], outputs["sample_weighted"]) > WRONG
        unmasked = {region: torch.ones_like(mask) for region, mask in masks.items()}
        assert max_diff(frames_on_axis(block(frames_in_batch(hidden), audio, unmasked), videos),
                        outputs["sample"]) > WRONG
        # Zero audio (their uncond half) still changes the latents: the to_out biases pass the masks and convs.
        assert not inputs["audio_embedding"][0].any()
        assert max_diff(sample[0], hidden[0]) > WRONG
