"""Hallo's small modules on ours (issue 26): each loaded from its golden fixture through the key map.

The fixtures (tests/fixtures/hallo/NAME.safetensors) were written by tools/hallo_reference.py from Hallo's own
code: ``in.*`` the call's inputs, ``out.*`` its outputs, ``state.*`` the module's weights under their key
names; NAME.json gives the constructor arguments, the call and the quirks. Every test also shows, once, that
the obvious alternative to the mirrored quirk lands far outside the bound, so the comparison can fail.
"""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange, repeat
from safetensors.torch import load_file

from portraittalk_core.audio.features import clamped_neighbour_windows, frame_windows, interpolate_to_frames
from hallo_fixtures import BOUND, FIXTURES, WRONG, fixture, max_diff
from portraittalk_core.convert import hallo_keys
from portraittalk_core.errors import WeightsError
from portraittalk_core.models.flat_audio_projection import FlatAudioProjection
from portraittalk_core.models.projection import IdentityProjection
from portraittalk_core.models.structure import structure_encoder

def test_image_projection_is_identity_projection():
    inputs, outputs, state, meta = fixture("image_proj")
    args = meta["constructor"]
    projection = IdentityProjection(args["clip_embeddings_dim"], args["cross_attention_dim"],
                                    args["clip_extra_context_tokens"]).eval()
    projection.load_state_dict(hallo_keys.rename(state, hallo_keys.IMAGE_PROJECTION))
    embeddings = inputs["image_embeds"]
    assert not embeddings[0].any()  # row 0 is the zero embedding their uncond projects

    with torch.no_grad():
        # One reference per video; rows [uncond, cond] as face_animate.py:294-298 concatenates them.
        tokens = projection(embeddings[:, None])
        assert max_diff(tokens, outputs["tokens"]) <= BOUND
        uncond = projection(torch.zeros_like(embeddings[1:2, None]))[0]
        assert max_diff(uncond, outputs["tokens"][0]) <= BOUND
        assert uncond.abs().max() > 0.1  # LayerNorm(proj.bias): not zeros

        # The quirk that matters: their reshape splits the Linear's output token-major.
        flat = projection.proj(embeddings)
        dim_major = projection.norm(rearrange(flat, "b (d k) -> b k d", k=args["clip_extra_context_tokens"]))
        assert max_diff(dim_major, outputs["tokens"]) > WRONG


def test_flat_audio_projection_and_zero_uncond_tokens():
    inputs, outputs, state, meta = fixture("audio_proj")
    args = meta["constructor"]
    projection = FlatAudioProjection(args["blocks"], args["channels"], (args["seq_len"] - 1) // 2,
                                     args["output_dim"], args["context_tokens"], args["intermediate_dim"]).eval()
    projection.load_state_dict(hallo_keys.rename(state, hallo_keys.AUDIO_PROJECTION))
    windows = inputs["audio_embeds"][0]  # (frames, window, layers, C): our audio windows' layout

    with torch.no_grad():
        tokens = projection(windows)
        assert max_diff(tokens, outputs["tokens"][0]) <= BOUND
        # Uncond audio is zeros of the projected tokens (face_animate.py:377-378), not the projection of zeros.
        audio_tensor = torch.stack([torch.zeros_like(tokens), tokens])
        assert max_diff(audio_tensor, outputs["audio_tensor"]) <= BOUND
        assert max_diff(projection(torch.zeros_like(windows)), outputs["audio_tensor"][0]) > WRONG

        # Flattened layer-major instead of window-major, the weights see their inputs permuted.
        layer_major = rearrange(windows, "f w l c -> f l w c").reshape(windows.shape)
        assert max_diff(projection(layer_major), outputs["tokens"][0]) > WRONG


def test_face_locator_is_structure_encoder_with_three_input_channels():
    inputs, outputs, state, meta = fixture("face_locator")
    args = meta["constructor"]
    encoder = structure_encoder(args["conditioning_embedding_channels"], tuple(args["block_out_channels"]),
                                input_channels=args["conditioning_channels"]).eval()
    encoder.load_state_dict(hallo_keys.rename(state, hallo_keys.FACE_LOCATOR))
    frames = outputs["embedding"].shape[2]

    with torch.no_grad():
        # Their locator runs on the face box repeated over the frames (face_animate.py:339-342); one pass
        # repeated is the same, as AnimateNet does for a still structure image.
        embedding = repeat(encoder(inputs["face_mask"]), "v c h w -> v c f h w", f=frames)
        assert max_diff(embedding, outputs["embedding"]) <= BOUND
        # The uncond half is zeros (face_animate.py:343), not the locator of a zero image.
        rows = torch.cat([torch.zeros_like(embedding), embedding])
        assert max_diff(rows, outputs["mask_cond_fea"]) <= BOUND
        zero_image = repeat(encoder(torch.zeros_like(inputs["face_mask"])), "v c h w -> v c f h w", f=frames)
        assert max_diff(zero_image, outputs["mask_cond_fea"][:1]) > WRONG

        # No SiLU after conv_out (face_locator.py:111): an activated output would differ.
        assert max_diff(torch.nn.functional.silu(embedding), outputs["embedding"]) > WRONG


def test_structure_encoder_defaults_are_unchanged():
    encoder = structure_encoder(32, (8, 16))
    assert encoder.conv_in.in_channels == 4


def test_clamped_neighbour_windows():
    inputs, outputs, _, _ = fixture("audio_windows")
    track = inputs["audio_emb"]
    windows = clamped_neighbour_windows(track, window=2)
    assert max_diff(windows, outputs["windows"]) <= BOUND
    # frame_windows resamples even at equal rates (a frame spreads over its neighbours): not the same.
    resampled = frame_windows(track, feature_rate=25.0, fps=25.0, n_frames=len(track), window=2)
    assert max_diff(resampled, outputs["windows"]) > WRONG


def test_interpolate_to_frames():
    inputs, outputs, _, meta = fixture("audio_interpolation")
    features = inputs["extract_features"]
    n_frames = meta["constructor"]["seq_len"]
    assert max_diff(interpolate_to_frames(features, n_frames), outputs["features"]) <= BOUND
    half_pixel = torch.nn.functional.interpolate(features.transpose(1, 2), size=n_frames, mode="linear",
                                                 align_corners=False).transpose(1, 2)
    assert max_diff(half_pixel, outputs["features"]) > WRONG


def test_key_maps_cover_the_small_modules_at_full_size():
    """Every net.pth key under each small module's prefix renames onto our module, with its shape."""
    net_keys = json.loads((FIXTURES / "net_keys.json").read_text())["keys"]
    with torch.device("meta"):
        ours = {
            "imageproj.": IdentityProjection(512, 768, 4),
            "audioproj.": FlatAudioProjection(12, 768, 2, 768, 32, 512),
            "face_locator.": structure_encoder(320, (16, 32, 64, 128), input_channels=3),
        }
    assert set(ours) == set(hallo_keys.NET_PREFIXES)
    for prefix, module in ours.items():
        theirs = {key[len(prefix):]: shape for key, shape in net_keys.items() if key.startswith(prefix)}
        renamed = hallo_keys.rename(theirs, hallo_keys.NET_PREFIXES[prefix])
        assert renamed == {key: list(value.shape) for key, value in module.state_dict().items()}


def test_rename_refuses_unknown_keys():
    with pytest.raises(WeightsError, match="no rename"):
        hallo_keys.rename({"imageproj.proj.weight": None}, hallo_keys.IMAGE_PROJECTION)


def test_audio_features_at_the_video_rate_match_hallo():
    """Their audio path on a tiny random wav2vec2 (tools/hallo_reference.py audio: the feature extractor's
    normalisation, padding to whole clips, CNN features interpolated before the encoder, layers 1..): our
    ``Wav2Vec2FrontEnd`` from the same saved model, through ``encode_audio_in_whole_clips``. Measured 2.0e-6 (their
    transformers 4.39.2, ours 5.x), held to 1e-5. Resampling the 50 Hz states afterwards instead
    (``encode_audio``, PortraitTalk's reading) is another computation."""
    from portraittalk_core.audio import Wav2Vec2FrontEnd, encode_audio, encode_audio_in_whole_clips
    from portraittalk_core.io.audio import load_audio

    meta = json.loads((FIXTURES / "audio_features.json").read_text())
    found = load_file(FIXTURES / "audio_features.safetensors")
    wave = load_audio(found["in.wave"].numpy(), source_rate=meta["sample_rate"])
    front_end = Wav2Vec2FrontEnd(FIXTURES / "wav2vec2_tiny")
    features = encode_audio_in_whole_clips(wave, front_end, meta["fps"], meta["clip_length"], window=2)
    assert features.n_frames == meta["frames"] and len(features.frames) == meta["padded_frames"]
    print("audio features max abs", max_diff(features.frames, found["out.windows"]))
    assert max_diff(features.frames, found["out.windows"]) < BOUND
    assert max_diff(front_end.at_frames(wave, meta["padded_frames"], (meta["padded_frames"] - meta["frames"]) * 640), found["out.audio_emb"]) < BOUND
    resampled = encode_audio(wave, front_end, meta["fps"], window=2).frames[:, :, 1:]
    assert max_diff(resampled, found["out.windows"][:len(resampled)]) > WRONG
