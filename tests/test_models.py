"""The networks on the tiny config: shapes, exactness of the patches, the bank, references, motion weights."""

from __future__ import annotations

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from portraittalk_core.config import tiny
from portraittalk_core.errors import WeightsError
from portraittalk_core.models import (AnimateNet, AttentionContext, AudioProjection, FaceEncoder, IdentityNet,
                                      IdentityProjection, PortraitTalkModel)

CFG = tiny()
D = CFG.cross_attention_dim
FRAMES = 4


def randomise_added(net: AnimateNet, seed: int = 1) -> None:
    """Give every added module non-zero weights, so a test can't pass because something is zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)


@pytest.fixture()
def nets():
    torch.manual_seed(0)
    base = UNet2DConditionModel(**CFG.unet).eval()
    net = AnimateNet(CFG, base).eval()
    randomise_added(net)
    identity = IdentityNet.from_backbone(base).eval()
    return base, net, identity


def inputs(videos=1, frames=FRAMES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(videos, 4, frames, 8, 8, generator=g), torch.randn(videos, 7, D, generator=g))


def bank_of(identity: IdentityNet, refs: int = 1, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _, bank = identity(torch.randn(1, refs, 4, 8, 8, generator=g), torch.randn(1, 7, D, generator=g),
                           torch.randn(1, refs * CFG.identity_tokens, D, generator=g), torch.ones(1))
    return bank


def full_context(identity, videos=1, frames=FRAMES, refs=1):
    g = torch.Generator().manual_seed(3)
    return AttentionContext(
        identity_tokens=torch.randn(videos, refs * CFG.identity_tokens, D, generator=g),
        identity_scale=torch.ones(videos), audio_tokens=torch.randn(videos * frames, CFG.audio_tokens, D, generator=g),
        audio_scale=torch.ones(videos), bank=bank_of(identity, refs), bank_scale=torch.ones(videos))


def test_shapes_through_every_module(nets):
    base, net, identity = nets
    emb = IdentityProjection(512, D, 3)(torch.randn(2, 4, 512))
    assert emb.shape == (2, 12, D)
    windows = torch.randn(FRAMES, 2 * CFG.audio_window + 1, CFG.audio_layers, CFG.audio_dim)
    assert AudioProjection(CFG.audio_layers, CFG.audio_dim, CFG.audio_window, D, 5)(windows).shape == (FRAMES, 5, D)
    faces = FaceEncoder(512, 32)(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert faces.shape == (3, 512) and torch.allclose(faces.norm(dim=-1), torch.ones(3), atol=1e-5)
    with torch.no_grad():
        noise, bank = identity(torch.randn(2, 3, 4, 8, 8), torch.randn(2, 7, D), torch.randn(2, 6, D), torch.ones(2))
    assert noise.shape == (2, 3, 4, 8, 8)
    assert set(bank) == {n for n in net.unet.attn_processors if n.endswith("attn1.processor")} or bank
    for name, hidden in bank.items():
        assert hidden.shape[0] == 2 and hidden.shape[1] % 3 == 0, name   # three references side by side
    latents, text = inputs(videos=2)
    ctx = full_context(identity, videos=2)
    ctx.bank = {k: v[:1] for k, v in bank.items()}
    with torch.no_grad():
        out = net(latents, 5, text, ctx, structure=torch.rand(2, 4, 64, 64))
    assert out.shape == latents.shape and out.dtype == torch.float32


def test_bfloat16_runs(nets):
    _, net, identity = nets
    net = net.to(torch.bfloat16)
    latents, text = inputs()
    ctx = full_context(identity)
    ctx.bank = {k: v.to(torch.bfloat16) for k, v in ctx.bank.items()}
    with torch.no_grad():
        out = net(latents.bfloat16(), 5, text.bfloat16(), ctx, structure=torch.rand(1, 4, 64, 64).bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_scales_at_zero_and_no_bank_equal_the_base_exactly(nets):
    """With PortraitTalk's paths off, AnimateNet computes exactly what diffusers' own model computes."""
    base, net, identity = nets
    stock = UNetMotionModel.from_unet2d(base, MotionAdapter(**CFG.motion)).eval()   # stock processors
    stock.load_state_dict({k: v for k, v in net.unet.state_dict().items() if ".processor." not in k})
    latents, text = inputs()
    ctx = full_context(identity)
    ctx.identity_scale = torch.zeros(1)
    ctx.audio_scale = torch.zeros(1)
    ctx.bank = None
    with torch.no_grad():
        ours = net(latents, 5, text, ctx)
        theirs = stock(latents, 5, encoder_hidden_states=text.repeat_interleave(FRAMES, 0)).sample
    assert torch.equal(ours, theirs)


def test_without_temporal_modules_it_is_the_image_unet(nets):
    base, net, _ = nets
    net.motion_scale = 0.0
    latents, text = inputs()
    with torch.no_grad():
        ours = net(latents, 5, text)
        frames = base(latents[0].permute(1, 0, 2, 3), 5, encoder_hidden_states=text.expand(FRAMES, -1, -1)).sample
    # Not bitwise: the motion UNet embeds the timestep once per video, the image UNet once per frame.
    torch.testing.assert_close(ours[0].permute(1, 0, 2, 3), frames, rtol=0, atol=1e-5)


def test_a_fresh_animatenet_starts_as_the_base_model():
    torch.manual_seed(0)
    base = UNet2DConditionModel(**CFG.unet).eval()
    net = AnimateNet(CFG, base).eval()
    latents, text = inputs()
    with torch.no_grad():
        ours = net(latents, 5, text, structure=torch.rand(1, 4, 64, 64))   # zero-initialised structure too
        frames = base(latents[0].permute(1, 0, 2, 3), 5, encoder_hidden_states=text.expand(FRAMES, -1, -1)).sample
    torch.testing.assert_close(ours[0].permute(1, 0, 2, 3), frames, rtol=0, atol=1e-5)


@pytest.mark.parametrize("path", ["bank", "identity", "audio", "structure", "motion"])
def test_each_added_path_changes_the_output(nets, path):
    _, net, identity = nets
    latents, text = inputs()
    ctx = full_context(identity)
    structure = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        full = net(latents, 5, text, ctx, structure)
        if path == "bank":
            ctx.bank_scale = torch.zeros(1)
        elif path == "identity":
            ctx.identity_scale = torch.zeros(1)
        elif path == "audio":
            ctx.audio_scale = torch.zeros(1)
        elif path == "structure":
            structure = None
        else:
            net.motion_scale = 0.0
        without = net(latents, 5, text, ctx, structure)
    assert (full - without).abs().max() > 1e-4


def test_batched_branches_equal_separate_calls(nets):
    """Guidance batches branches with different scales; each must equal its own unbatched call."""
    _, net, identity = nets
    latents, text = inputs()
    ctx = full_context(identity)
    with torch.no_grad():
        on = net(latents, 5, text, ctx)
        off_ctx = full_context(identity)
        off_ctx.bank_scale, off_ctx.identity_scale, off_ctx.audio_scale = torch.zeros(1), torch.zeros(1), torch.zeros(1)
        off = net(latents, 5, text, off_ctx)
        both = full_context(identity, videos=2)
        both.identity_tokens = ctx.identity_tokens.expand(2, -1, -1)
        both.audio_tokens = ctx.audio_tokens.repeat(2, 1, 1)
        both.identity_scale = both.bank_scale = both.audio_scale = torch.tensor([1.0, 0.0])
        batched = net(latents.repeat(2, 1, 1, 1, 1), 5, text.repeat(2, 1, 1), both)
    torch.testing.assert_close(batched[:1], on, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[1:], off, rtol=1e-4, atol=1e-5)


def test_several_references(nets):
    _, net, identity = nets
    one, three = bank_of(identity, refs=1), bank_of(identity, refs=3)
    for name in one:
        assert three[name].shape[1] == 3 * one[name].shape[1]
    latents, text = inputs()
    ctx = full_context(identity, refs=3)
    with torch.no_grad():
        out3 = net(latents, 5, text, ctx)
        ctx.bank = one
        ctx.identity_tokens = ctx.identity_tokens[:, :CFG.identity_tokens]
        out1 = net(latents, 5, text, ctx)
    assert (out3 - out1).abs().max() > 1e-5


def test_temporal_modules_load_motion_adapter_weights(tmp_path, nets):
    _, net, _ = nets
    torch.manual_seed(5)
    adapter = MotionAdapter(**CFG.motion)
    adapter.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    loaded = MotionAdapter.from_pretrained(tmp_path / "adapter", use_safetensors=True, local_files_only=True)
    net.load_motion_adapter(loaded)
    ours = net.unet.state_dict()
    theirs = adapter.state_dict()
    compared = 0
    for name, value in theirs.items():
        if "motion_modules" in name:
            assert torch.equal(ours[name], value), name
            compared += 1
    assert compared > 0 and compared == sum("motion_modules" in k for k in ours)

    wrong = MotionAdapter(**{**CFG.motion, "block_out_channels": (16, 32), "motion_norm_num_groups": 8})
    with pytest.raises(WeightsError, match="motion adapter"):
        net.load_motion_adapter(wrong)


def test_trainable_state_excludes_only_the_frozen_base():
    torch.manual_seed(0)
    model = PortraitTalkModel(CFG)
    trainable = model.trainable_state_dict()
    assert any(k.startswith("identity_net.") for k in trainable)
    assert any("motion_modules" in k for k in trainable)
    assert any("structure_encoder" in k for k in trainable)
    assert not any(k.startswith("animate_net.unet.conv_in") for k in trainable)
    frozen = [n for n, p in model.animate_net.named_parameters() if not p.requires_grad]
    assert frozen and all(PortraitTalkModel.is_base_parameter("animate_net." + n) for n in frozen)
