"""The ComfyUI host computes what the diffusers host computes, from the same weights (no ComfyUI needed:
ComfyUI's call of an attention replace patch is reproduced here as its source does it)."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from portraittalk_core.comfyui.blocks import comfy_block_key, comfy_unet_config
from portraittalk_core.comfyui.patches import (Branch, ComfyRun, DecoupledCrossAttentionPatch, IdentityAttentionPatch,
                                              attention_patches)
from portraittalk_core.config import sd15, tiny
from portraittalk_core.models import AnimateNet, AttentionContext
from portraittalk_core.models.attention import transformer_attention_layers
from test_models import randomise_added

CFG = tiny()
D = CFG.cross_attention_dim
FRAMES = 3


def test_block_keys_match_comfyui_sd15_numbering():
    # SD1.5 cross-attention blocks in ComfyUI: input 1,2,4,5,7,8; middle 0; output 3..11.
    names = [f"down_blocks.{i}.attentions.{j}.transformer_blocks.0.attn2" for i in range(3) for j in range(2)]
    names += ["mid_block.attentions.0.transformer_blocks.0.attn2"]
    names += [f"up_blocks.{i}.attentions.{j}.transformer_blocks.0.attn1" for i in range(1, 4) for j in range(3)]
    keys = [comfy_block_key(n, sd15().unet["layers_per_block"])[1:3] for n in names]
    assert keys == ([("input", i) for i in (1, 2, 4, 5, 7, 8)] + [("middle", 0)]
                    + [("output", i) for i in range(3, 12)])


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = AnimateNet(CFG, UNet2DConditionModel(**CFG.unet)).eval()
    randomise_added(net)
    return net


def comfy_call(layer, patch, hidden, context, extra_options):
    """What ComfyUI's BasicTransformerBlock does with an attn replace patch (attention.py, 0.3.64)."""
    q = layer.to_q(hidden)
    k = layer.to_k(hidden if context is None else context)
    v = layer.to_v(hidden if context is None else context)
    return layer.to_out[0](patch(q, k, v, extra_options))


def test_every_layer_has_a_patch(net):
    patches = attention_patches(net)
    assert len(patches) == len(transformer_attention_layers(net.unet))
    kinds = {type(p) for p in patches.values()}
    assert kinds == {IdentityAttentionPatch, DecoupledCrossAttentionPatch}


@pytest.mark.parametrize("chunks", [[1, 0], [0], [1]])
def test_patches_equal_the_diffusers_processors(net, chunks):
    g = torch.Generator().manual_seed(4)
    identity = torch.randn(1, 2 * CFG.identity_tokens, D, generator=g)
    audio = torch.randn(FRAMES, CFG.audio_tokens, D, generator=g)
    branches = {0: Branch(identity=True, audio=True), 1: Branch()}     # 0 = cond, 1 = uncond in ComfyUI
    on = torch.tensor([1.0 if branches[c].identity else 0.0 for c in chunks])
    audio_on = torch.tensor([1.0 if branches[c].audio else 0.0 for c in chunks])
    rows = len(chunks) * FRAMES
    banks = {}
    for name, layer in transformer_attention_layers(net.unet).items():
        if name.endswith("attn1"):
            banks[name] = torch.randn(1, 20, layer.to_k.in_features, generator=g)
    run = ComfyRun(branches, identity_tokens=identity, audio_tokens=audio, bank=banks,
                   identity_strength=0.7, audio_strength=1.3, reference_strength=0.5)
    ctx = AttentionContext(num_frames=FRAMES, identity_tokens=identity.expand(len(chunks), -1, -1),
                           identity_scale=on * 0.7, audio_tokens=audio.repeat(len(chunks), 1, 1),
                           audio_scale=audio_on * 1.3, bank=banks, bank_scale=on * 0.5)
    patches = attention_patches(net)
    for name, layer in transformer_attention_layers(net.unet).items():
        kind, block, number, index = comfy_block_key(name, 1)
        hidden = torch.randn(rows, 16, layer.to_q.in_features, generator=g)
        text = torch.randn(rows, 7, D, generator=g) if kind == "attn2" else None
        extra = {"n_heads": layer.heads, "cond_or_uncond": chunks, "portraittalk": run, "block": (block, number)}
        with torch.no_grad():
            ours = comfy_call(layer, patches[(kind, block, number, index)], hidden, text, extra)
            theirs = layer.processor(layer, hidden, text, portraittalk=ctx)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


def test_without_a_run_the_patches_are_plain_attention(net):
    patches = attention_patches(net)
    g = torch.Generator().manual_seed(5)
    for name, layer in transformer_attention_layers(net.unet).items():
        kind, block, number, index = comfy_block_key(name, 1)
        hidden = torch.randn(2, 16, layer.to_q.in_features, generator=g)
        text = torch.randn(2, 7, D, generator=g) if kind == "attn2" else None
        extra = {"n_heads": layer.heads, "cond_or_uncond": [0]}
        with torch.no_grad():
            ours = comfy_call(layer, patches[(kind, block, number, index)], hidden, text, extra)
            plain = layer.to_out[0](torch.nn.functional.scaled_dot_product_attention(
                *(t.unflatten(-1, (layer.heads, -1)).transpose(1, 2) for t in
                  (layer.to_q(hidden), layer.to_k(hidden if text is None else text),
                   layer.to_v(hidden if text is None else text)))).transpose(1, 2).flatten(2))
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)


def test_audio_frames_must_match_the_batch(net):
    patch = next(p for p in attention_patches(net).values() if isinstance(p, DecoupledCrossAttentionPatch))
    layer = patch.processor
    run = ComfyRun({0: Branch(True, True)}, audio_tokens=torch.randn(FRAMES + 1, CFG.audio_tokens, D))
    q = torch.randn(FRAMES, 16, layer.to_k_id.out_features)
    k = v = torch.randn(FRAMES, 7, layer.to_k_id.out_features)
    from portraittalk_core.errors import InputError
    with pytest.raises(InputError, match="frame count"):
        patch(q, k, v, {"n_heads": 2, "cond_or_uncond": [0], "portraittalk": run})


def test_unet_config_for_comfyui_matches_sd15():
    """Our conversion gives, for SD1.5, exactly the UNet shape ComfyUI detects from an SD1.5 checkpoint."""
    got = comfy_unet_config(sd15().unet)
    assert got["model_channels"] == 320 and got["context_dim"] == 768
    assert got["channel_mult"] == [1, 2, 4, 4] and got["num_res_blocks"] == [2, 2, 2, 2]
    assert got["transformer_depth"] == [1, 1, 1, 1, 1, 1, 0, 0]           # per layer, as ComfyUI detects it
    assert got["transformer_depth_output"] == [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert got["num_heads"] == 8 and got["num_head_channels"] == -1


def test_comfyui_audio_encoder_output_becomes_features():
    from portraittalk_core.audio import features_from_comfy_encoder
    from portraittalk_core.errors import AudioError

    # 2 s at 50 per second, 4 layers + embeddings; layer i holds the value i, so the layout is checkable.
    layers = tuple(torch.full((1, 100, 16), float(i)) for i in range(5))
    features = features_from_comfy_encoder({"encoded_audio_all_layers": layers, "audio_samples": 32000}, 2.0, 25.0)
    assert features.n_frames == 50 and features.frames.shape == (50, 5, 5, 16)   # (frames, window, layers, C)
    for i in range(5):
        assert torch.allclose(features.frames[:, :, i], torch.full((50, 5, 16), float(i)))
    with pytest.raises(AudioError, match="Audio Encoder Encode"):
        features_from_comfy_encoder({"encoded_audio": layers[0]}, 2.0, 25.0)
