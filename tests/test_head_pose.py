"""The head's movement from the speech (models/head_pose.py): its algebra, its training stage and generation
moving the photo with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from portraittalk_core.errors import InputError
from portraittalk_core.head_motion import motion_from_speech, moved_face
from portraittalk_core.models import SpeechHeadMotion, movement_since_first
from tests.conftest import tone

RATE = 16_000


def affine(angle: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def test_movement_since_first_takes_the_first_frames_head_onto_each_frames():
    placements = np.stack([affine(0.0, (0.0, 0.0)), affine(0.05, (0.01, -0.02)), affine(-0.03, (0.0, 0.03))])
    offsets = torch.from_numpy(placements - np.eye(2, 3))[None]
    movement = movement_since_first(offsets)[0].numpy()
    np.testing.assert_allclose(movement, placements, atol=1e-12)        # the first frame at the identity: as they are
    later = np.stack([affine(0.1, (0.02, 0.0)), affine(0.12, (0.03, 0.01))])
    movement = movement_since_first(torch.from_numpy(later - np.eye(2, 3)))
    homogeneous = [np.vstack([m, [0, 0, 1]]) for m in later]
    expected = homogeneous[1] @ np.linalg.inv(homogeneous[0])
    np.testing.assert_allclose(movement[0].numpy(), np.eye(2, 3), atol=1e-12)
    np.testing.assert_allclose(movement[1].numpy(), expected[:2], atol=1e-12)


def test_an_untrained_module_leaves_the_head_where_it_is_and_a_trained_one_follows_the_features():
    net = SpeechHeadMotion(num_layers=1, feature_dim=8, channels=16).eval()
    features = torch.randn(2, 30, 1, 8)
    assert torch.equal(net(features), torch.zeros(2, 30, 2, 3))        # zero-initialised output
    torch.nn.init.normal_(net.proj_out.weight, std=0.01)
    out = net(features)
    assert out.shape == (2, 30, 2, 3) and out.abs().max() > 0
    changed = features.clone()
    changed[:, 29] += 5.0
    assert (net(changed)[:, 29] - out[:, 29]).abs().max() > (net(changed)[:, 0] - out[:, 0]).abs().max()  # nearby most


def test_motion_from_speech_is_in_the_crops_pixels_and_a_model_without_the_module_says_what_to_do(tiny_pipe):
    model = tiny_pipe.model
    config = model.config
    windows = torch.randn(20, 2 * config.audio_window + 1, config.audio_layers, config.audio_dim)
    with pytest.raises(InputError, match="does not predict head motion from speech") as err:
        motion_from_speech(model, windows, 25.0, 64)
    assert "PortraitTalk Head Motion" in err.value.fix and "stage motion" in err.value.fix

    net = SpeechHeadMotion(config.audio_layers, config.audio_dim, 8).eval()
    torch.nn.init.normal_(net.proj_out.weight, std=0.05)
    model.head_motion = net
    try:
        small, large = motion_from_speech(model, windows, 25.0, 64), motion_from_speech(model, windows, 25.0, 512)
    finally:
        model.head_motion = None
    assert small.transforms.shape == (20, 2, 3) and small.fps == 25.0 and small.resolution == 64
    np.testing.assert_allclose(small.transforms[0], np.eye(2, 3), atol=1e-4)   # the first frame is the photo
    np.testing.assert_allclose(large.transforms[:, :, :2], small.transforms[:, :, :2])
    np.testing.assert_allclose(large.transforms[:, :, 2], small.transforms[:, :, 2] * 8, rtol=1e-5, atol=1e-5)
    assert np.abs(small.transforms[1:, :, 2]).max() > 0.01                 # it moves


def test_motion_from_speech_is_smoothed_over_time_and_the_first_frame_stays_the_photo(tiny_pipe):
    model = tiny_pipe.model
    config = model.config
    with torch.random.fork_rng():   # the same data whatever ran before
        torch.manual_seed(0)
        windows = torch.randn(40, 2 * config.audio_window + 1, config.audio_layers, config.audio_dim)
        net = SpeechHeadMotion(config.audio_layers, config.audio_dim, 8).eval()
        torch.nn.init.normal_(net.proj_out.weight, std=0.05)
    model.head_motion = net
    try:
        raw = motion_from_speech(model, windows, 25.0, 64, smoothing=0).transforms
        smooth = motion_from_speech(model, windows, 25.0, 64).transforms          # the default smoothing
        slower = motion_from_speech(model, windows, 25.0, 64, smoothing=0.2).transforms
        with torch.inference_mode():
            offsets = net(windows[:, config.audio_window][None])
        with pytest.raises(InputError, match="smoothing must be 0 or more") as err:
            motion_from_speech(model, windows, 25.0, 64, smoothing=-0.1)
        assert "pass 0" in err.value.fix
    finally:
        model.head_motion = None
    expected = movement_since_first(offsets.float())[0].numpy()
    expected[:, :, 2] *= 64
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-5)           # 0: as the module predicts
    for transforms in (smooth, slower):
        # the first frame is the photo: exactly up to float32 rounding, which the shift (in pixels of a 64 px crop)
        # carries 64 times larger than the rotation and scale
        np.testing.assert_allclose(transforms[0][:, :2], np.eye(2), atol=1e-6)
        np.testing.assert_allclose(transforms[0][:, 2], 0.0, atol=64 * 1e-6)

    def tremble(transforms):                                                  # frame-to-frame acceleration
        return np.abs(np.diff(transforms, 2, axis=0)).mean()

    assert tremble(raw) > 1.5 * tremble(smooth) > 1.5 * 1.5 * tremble(slower)
    assert np.abs(smooth[1:] - np.eye(2, 3)).max() > 0.01                     # smoothed, not stopped


def test_generation_moves_the_photo_as_the_speech_says_unless_told_not_to(tiny_pipe, reference_path):
    from portraittalk_core.generation.settings import GenerationSettings
    from portraittalk_core.generation.compositing import kept_outside_mouth, paste_weights

    config = tiny_pipe.config
    net = SpeechHeadMotion(config.audio_layers, config.audio_dim, 8).eval()
    torch.nn.init.normal_(net.proj_out.weight, std=0.2)
    audio = (tone(0.4), RATE)
    settings = GenerationSettings(steps=1, region="mouth", seed=1)
    moving, still, asked_still = [], [], []
    tiny_pipe.model.head_motion = net
    try:
        tiny_pipe([reference_path], audio, None, settings, progress=False, on_frames=moving.append)
        features = tiny_pipe.prepare_audio(audio, config.fps)[1]
        expected = motion_from_speech(tiny_pipe.model, features.frames, config.fps, config.resolution).transforms
        tiny_pipe([reference_path], audio, None, GenerationSettings(steps=1, region="mouth", seed=1,
                  head_motion_from_speech=False), progress=False, on_frames=asked_still.append)
    finally:
        tiny_pipe.model.head_motion = None
    assert np.abs(expected[1:] - np.eye(2, 3)).max() > 0.1                 # the check below sees real movement
    face = tiny_pipe.prepare_references([reference_path], config.resolution).faces[0]
    for frame, transform in zip(np.concatenate(moving), expected):
        moved = moved_face(face, transform)
        outside = paste_weights(kept_outside_mouth(moved, config.vae_scale), config.vae_scale)[..., 0] == 0
        assert np.array_equal(frame[outside], moved.image[outside])

    tiny_pipe([reference_path], audio, None, settings, progress=False, on_frames=still.append)   # no module
    assert np.array_equal(np.concatenate(asked_still), np.concatenate(still))
    assert not np.array_equal(np.concatenate(moving), np.concatenate(still))
