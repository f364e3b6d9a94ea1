"""Hallo's layout in the ComfyUI host, piece by piece, against the diffusers host's modules (issue 26; no ComfyUI
needed: ComfyUI's calls of its patches and inserted layers are reproduced here as its source makes them).

Their tiny Net (tests/fixtures/hallo/tiny_net.pth) goes through ``convert_hallo`` as a user's would. The ComfyUI host
loads the PortraitTalk file alone (its UNet is ComfyUI's, from hallo_unet.safetensors); the diffusers host the same
file over diffusers' UNet converted from hallo_unet.safetensors. Each patched piece is held to 1e-5 of the diffusers
module on the fixtures' own banks, audio tokens, masks and residuals. The whole guided UNet call and two steps in a
real ComfyUI: tests/test_comfyui.py (test_hallo_in_comfyui_reproduces_their_unet_call_and_two_steps).

Then the graph around it without ComfyUI: the photo's inputs as Load Identity Refs makes them (the diffusers host's),
the clip plan and the images the clip loop hands ComfyUI's VAE and takes back (comfyui/hallo.py), the Loader's
"auto" wav2vec2 folder and Audio Encode's refusal of ComfyUI's encoding. The loop itself, end to end in a real
ComfyUI: tests/test_comfyui.py (test_tiny_hallo_runs_end_to_end).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from einops import rearrange
from safetensors.torch import load_file

from conftest import tone
from hallo_fixtures import BOUND, FIXTURES, RawEmbeddingDetector, max_diff
from portraittalk_core import face as face_io
from portraittalk_core.audio.features import AudioFeatures
from portraittalk_core.clips import Clip, plan_clips
from portraittalk_core.comfyui.blocks import comfy_block_key
from portraittalk_core.comfyui.hallo import (NEGATIVE, POSITIVE, VIDEOS, bank_and_prefix, check_hallo_layout,
                                             check_photo_inputs, face_conditioning, face_tokens, hallo_clips,
                                             hallo_run, motion_from_images, photo_inputs, reference_pass,
                                             structure_patch, vae_images)
from portraittalk_core.comfyui.layers import (RegionAudioLayer, TemporalLayer, block_layers, region_audio_handler,
                                              temporal_handler)
from portraittalk_core.comfyui.patches import (KEY, SharedBankAttentionPatch, attention_patches, bank_tokens_patch)
from portraittalk_core.conditioning import (References, prepare_encoded_audio, prepare_hallo_inputs,
                                           wav2vec2_folder_for)
from portraittalk_core.config import hallo, hallo_tiny, sd15, tiny
from portraittalk_core.convert.hallo import convert_hallo
from portraittalk_core.errors import InputError, PortraitTalkWarning, WeightsError
from portraittalk_core.generation.reference_rows import decoded_as_motion, frames_of_the_audio
from portraittalk_core.models import AnimateNet
from portraittalk_core.models.attention import AttentionContext, transformer_attention_layers
from portraittalk_core.models.audio_block import REGIONS
from portraittalk_core.weights import load_model

CHUNK_ORDERS = [[POSITIVE, NEGATIVE], [NEGATIVE, POSITIVE], [POSITIVE], [NEGATIVE]]


def tiny_hallo_files(folder):
    """(hallo_unet.safetensors, portraittalk_hallo.safetensors) of their tiny Net, converted."""
    return convert_hallo(FIXTURES / "tiny_net.pth", folder, hallo_tiny())


def diffusers_unet(path) -> UNet2DConditionModel:
    """The converted UNet file in diffusers, through diffusers' own single-file converter."""
    config = hallo_tiny()
    unet = UNet2DConditionModel(**config.unet)
    unet.load_state_dict(convert_ldm_unet_checkpoint(load_file(path), dict(config.unet)))
    return unet


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """(the ComfyUI host's model: no base UNet; the diffusers host's: the same file over the converted UNet)."""
    unet_path, model_path = tiny_hallo_files(tmp_path_factory.mktemp("hallo"))
    return load_model(model_path), load_model(model_path, base_unet=diffusers_unet(unet_path))


def fixture(name: str) -> dict[str, dict[str, torch.Tensor]]:
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(FIXTURES / f"{name}.safetensors").items():
        part, rest = key.split(".", 1)
        found.setdefault(part, {})[rest] = value
    return found


REFS = 3   # the fixtures' reference pass: [photo, 2 motion frames]
FRAMES = 4


@pytest.fixture(scope="module")
def call():
    """unet_call's inputs, and its float16 banks as the run's bank and motion prefix."""
    found = fixture("unet_call")
    record = {f"{name}.attn1": rearrange(rows, "(b r) n c -> b (r n) c", r=REFS)
              for name, rows in found["bank"].items()}
    bank, prefix = bank_and_prefix(record, REFS)
    return found["in"], bank, prefix


def comfy_rows(rows: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Rows in the diffusers host's [uncond video; cond video] order -> ComfyUI's batch of ``chunks``."""
    videos = rows.unflatten(0, (2, -1))
    return torch.cat([videos[VIDEOS[c]] for c in chunks])


def options(run, chunks, **extra) -> dict:
    """ComfyUI's transformer_options as its blocks pass them (the patches' extra_options hold the same keys)."""
    return {"cond_or_uncond": chunks, KEY: run, **extra}


def test_patches_for_the_hallo_layout(nets):
    comfy_net, _ = nets
    patches = attention_patches(comfy_net.animate_net)
    layers = transformer_attention_layers(comfy_net.animate_net.unet)
    attn1 = {comfy_block_key(n, 1) for n in layers if n.endswith("attn1")}
    # no attn2 patch: the face tokens are the CONDITIONING, ComfyUI's own cross-attention reads them
    assert set(patches) == attn1 and all(isinstance(p, SharedBankAttentionPatch) for p in patches.values())
    assert set(bank_tokens_patch(comfy_net.animate_net).layers) == {key[1:] for key in attn1}
    # PortraitTalk's own layout: no bank tokens patch, every attention layer patched as before
    net = AnimateNet(tiny(), UNet2DConditionModel(**tiny().unet))
    assert bank_tokens_patch(net) is None
    assert len(attention_patches(net)) == len(transformer_attention_layers(net.unet))


def comfy_attn1(layer, bank_tokens, replace, n, extra_options):
    """What ComfyUI's BasicTransformerBlock does with an attn1_patch and an attn1 replace (attention.py, 0.3.64)."""
    n, context, value = bank_tokens(n, n, n, extra_options)
    return layer.to_out[0](replace(layer.to_q(n), layer.to_k(context), layer.to_v(value), extra_options))


@pytest.mark.parametrize("chunks", CHUNK_ORDERS)
def test_shared_bank_attention_equals_the_diffusers_reader(nets, call, chunks):
    """attn1 over [frame; bank] with the layer's own projections, the bank tiled over (video, frame) and switched off
    for the negative chunk, against IdentityAttention (shared keys, tiled) on [uncond; cond] rows."""
    comfy_net, diffusers_net = nets
    _, bank, prefix = call
    run = hallo_run(bank, prefix, masks={})
    patches = attention_patches(comfy_net.animate_net)
    bank_tokens = bank_tokens_patch(comfy_net.animate_net)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for name, layer in transformer_attention_layers(diffusers_net.animate_net.unet).items():
        if not name.endswith("attn1"):
            continue
        kind, block, number, index = comfy_block_key(name, 1)
        hidden = torch.randn(2 * FRAMES, bank[name].shape[1], layer.to_q.in_features, generator=g)
        ctx = AttentionContext(num_frames=FRAMES, bank=bank, bank_scale=torch.tensor([0.0, 1.0]))
        extra = options(run, chunks, n_heads=layer.heads, block=(block, number), block_index=index)
        with torch.no_grad():
            theirs = comfy_rows(layer.processor(layer, hidden, portraittalk=ctx), chunks)
            ours = comfy_attn1(layer, bank_tokens, patches[(kind, block, number, index)], comfy_rows(hidden, chunks),
                               extra)
        worst = max(worst, max_diff(ours, theirs))
    print("attn1 with the bank, max abs", chunks, worst)
    assert worst < BOUND


def with_context(net, ctx: AttentionContext):
    """The diffusers host's hooks read AnimateNet's context during its forward; set it for a module called alone."""
    net._context = ctx
    return net


@pytest.mark.parametrize("chunks", CHUNK_ORDERS)
def test_prefixed_temporal_layers_equal_the_diffusers_motion_modules(nets, call, chunks):
    """Each TemporalLayer with its chunks' motion prefix against the same motion module run through AnimateNet's
    prefix hooks (per-frame GroupNorm in both); the attention-free blocks' modules are not placed at all."""
    comfy_net, diffusers_net = nets
    _, bank, prefix = call
    run = hallo_run(bank, prefix, masks={})
    layers = [layer for _, _, layer in block_layers(comfy_net.animate_net, 1.0) if isinstance(layer, TemporalLayer)]
    assert sorted(layer.name for layer in layers) == sorted(prefix)
    modules = dict(diffusers_net.animate_net.unet.named_modules())
    ctx = AttentionContext(num_frames=FRAMES, motion_prefix={k: v.flatten(0, 1) for k, v in prefix.items()})
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for layer in layers:
        side = int(prefix[layer.name].shape[2] ** 0.5)
        hidden = torch.randn(2 * FRAMES, prefix[layer.name].shape[3], side, side, generator=g)
        with torch.no_grad():
            try:
                with_context(diffusers_net.animate_net, ctx)
                theirs = modules[layer.name](hidden, num_frames=FRAMES)
            finally:
                with_context(diffusers_net.animate_net, None)
            ours = temporal_handler(layer, comfy_rows(hidden, chunks), None, None, options(run, chunks))
        worst = max(worst, max_diff(ours, comfy_rows(theirs, chunks)))
    print("motion modules with the prefix, max abs", chunks, worst)
    assert worst < BOUND


def test_layers_are_placed_as_hallo_runs_them(nets):
    """After each spatial transformer its audio block, then its motion module (unet_3d_blocks.py:724-748); none for
    the attention-free blocks' motion modules (down 3, up 0), which their inference never runs."""
    comfy_net, _ = nets
    placed = [(kind, number, type(layer).__name__) for kind, number, layer in block_layers(comfy_net.animate_net, 1.0)]
    # one layer a level: input 1, 3, 5 (down 0-2; 7 is down 3), middle, output 2-7 (up 1-3; 0-1 are up 0)
    pairs = [("input", 1), ("input", 3), ("input", 5), ("middle", 0), *[("output", i) for i in range(2, 8)]]
    assert placed == [(*where, name) for where in pairs for name in ("RegionAudioLayer", "TemporalLayer")]


@pytest.mark.parametrize("chunks", CHUNK_ORDERS)
def test_region_audio_layers_equal_the_diffusers_hook(nets, call, chunks):
    """Each RegionAudioLayer with its level's masks and the chunks' audio tokens (zeros for the negative chunk)
    against AnimateNet's hook after the same transformer, on the fixture's tokens and masks."""
    comfy_net, diffusers_net = nets
    inputs, bank, prefix = call
    levels = range(4)
    for region in REGIONS:  # their masks are the same for both rows: the run holds one row's frames
        for level in levels:
            mask = inputs[f"{region}_mask.{level}"]
            assert torch.equal(mask[:FRAMES], mask[FRAMES:])
    masks = {region: [inputs[f"{region}_mask.{level}"] for level in levels] for region in REGIONS}
    run = hallo_run(bank, prefix, {region: [m[:FRAMES] for m in ms] for region, ms in masks.items()},
                    audio_tokens=inputs["audio_embedding"][1])
    assert torch.equal(inputs["audio_embedding"][0], torch.zeros_like(inputs["audio_embedding"][0]))
    ctx = AttentionContext(num_frames=FRAMES, region_masks=masks,
                           audio_tokens=rearrange(inputs["audio_embedding"], "b f m d -> (b f) m d"))
    g = torch.Generator().manual_seed(2)
    worst = 0.0
    layers = [layer for _, _, layer in block_layers(comfy_net.animate_net, 1.0) if isinstance(layer, RegionAudioLayer)]
    names = {id(module): name for name, module in comfy_net.animate_net.unet.named_modules()}
    theirs_blocks = dict(diffusers_net.animate_net.unet.named_modules())
    assert len(layers) == 10
    for layer in layers:
        block = theirs_blocks[names[id(layer.block)]]
        side = int(masks["full"][layer.level].shape[1] ** 0.5)
        hidden = torch.randn(2 * FRAMES, block.norm.num_channels, side, side, generator=g)
        with torch.no_grad():
            try:
                with_context(diffusers_net.animate_net, ctx)
                theirs, = diffusers_net.animate_net._region_audio(block, layer.level, None, None, (hidden,))
            finally:
                with_context(diffusers_net.animate_net, None)
            ours = region_audio_handler(layer, comfy_rows(hidden, chunks), None, None, options(run, chunks))
        worst = max(worst, max_diff(ours, comfy_rows(theirs, chunks)))
    print("region audio blocks, max abs", chunks, worst)
    assert worst < BOUND


@pytest.mark.parametrize("chunks", CHUNK_ORDERS)
def test_structure_residual_on_the_positive_chunk_only(call, chunks):
    """The face locator's residual after conv_in for the positive chunk, nothing for the negative one: the fixture's
    mask_cond_fea ([zeros; residual] per frame) exactly."""
    inputs, _, _ = call
    residual = rearrange(inputs["mask_cond_fea"], "b c f h w -> (b f) c h w")
    patch = structure_patch(residual[FRAMES:])
    h = torch.randn(2 * FRAMES, residual.shape[1], 8, 8, generator=torch.Generator().manual_seed(3))
    ours = patch(comfy_rows(h, chunks), {"block": ("input", 0), "cond_or_uncond": chunks})
    assert torch.equal(ours, comfy_rows(h + residual, chunks))


def test_conditioning_and_reference_pass_from_the_raw_inputs(nets):
    """two_steps' face tokens ([proj(0); proj(face)]) as CONDITIONING, and the reference pass over [photo, motion
    frames] as the run's float16 bank and prefix: unet_call's banks within one float16 step (their float32 values
    straddle a rounding boundary here and there: tests/test_hallo_host.py)."""
    comfy_net, _ = nets
    found = fixture("two_steps")
    inputs = found["in"]
    with torch.no_grad():
        tokens = face_tokens(comfy_net, inputs["face_emb"])
        positive, negative = face_conditioning(tokens)
        bank, prefix = reference_pass(comfy_net, inputs["ref_image_latents"], tokens)
        residual = comfy_net.animate_net.structure_encoder(inputs["face_region"])
    assert max_diff(tokens, found["cond"]["encoder_hidden_states"]) < BOUND
    assert torch.equal(positive[0][0], tokens[1:]) and torch.equal(negative[0][0], tokens[:1])
    assert max_diff(residual, found["cond"]["mask_cond_fea"][1:, :, 0]) < BOUND
    their_banks = fixture("unet_call")["bank"]
    for name, rows in their_banks.items():
        theirs = rows.unflatten(0, (2, REFS))
        assert bank[f"{name}.attn1"].dtype == torch.float16
        assert max_diff(bank[f"{name}.attn1"].float(), theirs[:, 0].float()) <= 2 ** -8, name
        block, _, index = name.partition(".attentions.")
        assert max_diff(prefix[f"{block}.motion_modules.{index.split('.')[0]}"].float(), theirs.float()) <= 2 ** -8


# -- the graph around it: the photo's inputs, the audio, the clip loop's pure parts (comfyui/hallo.py) -------------
def bundle(model, detector, name: str = "portraittalk_hallo.safetensors") -> SimpleNamespace:
    """What comfyui/bundle.PortraitTalkBundle gives the functions here."""
    return SimpleNamespace(model=model, config=model.config, detector=detector, name=name)


def test_photo_inputs_are_the_diffusers_hosts(nets, reference_path):
    """Load Identity Refs for a Hallo-layout model: the first photo as conditioning.prepare_hallo_inputs reads it
    (mediapipe's mesh for the masks, the Loader's detector for the raw embedding), the others ignored with a
    warning."""
    comfy_net, _ = nets
    image = face_io.to_rgb_uint8(reference_path)
    with face_io.MediaPipeDetector() as landmarks:
        theirs = prepare_hallo_inputs(image, landmarks, comfy_net, 64, RawEmbeddingDetector())
    with pytest.warns(PortraitTalkWarning, match="reads one photo: image 1 of 2 is used"):
        ours = photo_inputs(bundle(comfy_net, RawEmbeddingDetector()), [image, image[::-1]], 64)
    for name in ("pixels", "face_box", "embedding"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    assert all(torch.equal(a, b) for region in REGIONS for a, b in zip(ours.masks[region], theirs.masks[region]))
    assert check_photo_inputs(ours) is ours


def test_an_arcface_model_read_with_mediapipe_names_insightface(nets, reference_path):
    comfy_net, _ = nets
    with face_io.MediaPipeDetector() as detector:
        with pytest.raises(WeightsError, match="only insightface gives.*Fix: pip install insightface onnxruntime.*"
                                               "models/insightface/models/antelopev2.*'insightface antelopev2'"):
            photo_inputs(bundle(comfy_net, detector), [face_io.to_rgb_uint8(reference_path)], 64)


def test_refs_and_models_of_the_other_layout_are_refused(nets):
    comfy_net, _ = nets
    refs = References(faces=[], pixels=torch.zeros(1, 3, 64, 64), structure=torch.zeros(1, 4, 64, 64),
                      embeddings=torch.zeros(1, 16))
    with pytest.raises(InputError, match="made for a PortraitTalk model of its own layout.*Fix: feed"):
        check_photo_inputs(refs)
    check_hallo_layout(bundle(comfy_net, None))
    own = SimpleNamespace(config=tiny(), name="tiny.safetensors")
    with pytest.raises(InputError, match="not a Hallo-layout model.*Fix: sample it with PortraitTalk Sampler"):
        check_hallo_layout(own)


def features(frames: int, padded: int, config) -> AudioFeatures:
    rows = torch.zeros(padded, 2 * config.audio_window + 1, config.audio_layers, config.audio_dim)
    return AudioFeatures(rows, 25.0, frames, frames / 25.0, "wav2vec2")


def test_clip_plan_is_the_diffusers_hosts():
    """Whole clips over the padded audio, none overlapping: the plan pipeline._generate_hallo makes
    (plan_clips(len(frames), clip_frames, 0)), and each clip keeps only the audio's frames."""
    config = hallo_tiny()
    clips = hallo_clips(features(7, 8, config), config)
    assert clips == plan_clips(8, config.clip_frames, 0) == [Clip(0, 4, 0), Clip(4, 8, 0)]
    assert [frames_of_the_audio(clip, 7) for clip in clips] == [4, 3]
    with pytest.raises(InputError, match="not whole clips of 4.*Fix: encode the audio with PortraitTalk Audio Encode"):
        hallo_clips(features(7, 7, config), config)
    with pytest.raises(WeightsError, match="layers"):
        hallo_clips(features(8, 8, tiny()), config)


def test_images_to_and_from_comfyuis_vae_are_the_rows_their_pipeline_reads():
    """Reference rows in [-1, 1] -> the IMAGE ComfyUI's VAE encodes (it maps [0, 1] back to [-1, 1]); ComfyUI's
    decoded IMAGE (clamped to [0, 1]) -> motion rows equal to decoded_as_motion of the raw decoded frames."""
    g = torch.Generator().manual_seed(0)
    rows = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    images = vae_images(rows)
    assert images.shape == (3, 8, 8, 3) and images.min() >= 0 and images.max() <= 1
    assert max_diff(images.permute(0, 3, 1, 2) * 2 - 1, rows) < 1e-6
    decoded = torch.randn(2, 3, 8, 8, generator=g) * 1.5             # as a VAE decodes: past [-1, 1] here and there
    comfy_image = ((decoded + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)  # ComfyUI's VAE.decode output
    assert max_diff(motion_from_images(comfy_image), decoded_as_motion(decoded)) < 1e-6


def test_auto_audio_encoder_is_the_folder_that_fits_the_model(tmp_path):
    """PortraitTalk Loader's audio_encoder "auto": the first wav2vec2 folder whose width and layer count the model
    reads (Hallo's: the encoder's layers alone; PortraitTalk's: with the embeddings' output), others skipped."""
    def folder(name: str, **config):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config) if config else "")

    folder("a_empty")                                                            # an empty config.json (a stub)
    folder("b_large", model_type="wav2vec2", hidden_size=1024, num_hidden_layers=24)
    folder("c_hubert", model_type="hubert", hidden_size=16, num_hidden_layers=3)
    folder("d_tiny", model_type="wav2vec2", hidden_size=16, num_hidden_layers=3)
    folder("e_base", model_type="wav2vec2", hidden_size=768, num_hidden_layers=12)
    (tmp_path / "model.safetensors").write_bytes(b"")                             # a file: ComfyUI's own encoders
    assert wav2vec2_folder_for(hallo_tiny(), tmp_path) == "d_tiny"
    assert wav2vec2_folder_for(hallo(), tmp_path) == "e_base"
    assert wav2vec2_folder_for(sd15(), tmp_path) == "e_base"            # 13 states: the embeddings' and 12 layers
    with pytest.raises(WeightsError, match="no folder in .* holds one.*Fix: put one's config.json"):
        wav2vec2_folder_for(sd15().replace(audio_dim=512), tmp_path)


def test_comfyuis_audio_encoding_is_refused_for_hallos_audio():
    with pytest.raises(InputError, match="interpolated to the video's frames before the encoder.*Fix: disconnect "
                                         "audio_encoder_output"):
        prepare_encoded_audio({"encoded_audio_all_layers": [torch.zeros(1, 10, 16)]}, (tone(0.2), 16_000),
                              hallo_tiny(), 25.0)
