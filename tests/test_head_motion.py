"""Head motion from a driving video (head_motion.py) and the pipeline moving the photo with it."""

from __future__ import annotations

import math

import av
import cv2
import numpy as np
import pytest

from portraittalk_core.errors import FaceError, InputError
from portraittalk_core.head_motion import motion_from_landmarks, moved_face, read_head_motion, retime
from tests.conftest import tone

RATE = 16_000


def similarity(angle_degrees: float, scale: float, shift, centre=(0.0, 0.0)) -> np.ndarray:
    """2x3: rotate by the angle and scale about ``centre``, then shift."""
    matrix = cv2.getRotationMatrix2D(tuple(map(float, centre)), angle_degrees, scale)
    matrix[:, 2] += shift
    return matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_motion_is_the_brow_and_nose_similarity_whatever_the_mouth_and_jaw_do():
    regions = {"outline": [0, 1, 2, 3], "brows": [4, 5], "nose": [6], "eyes": [7, 8], "mouth": [9, 10, 11]}
    rng = np.random.default_rng(0)
    first = rng.uniform(10, 50, (12, 2))
    truth = [np.eye(2, 3), similarity(5, 1.1, (2, -3), (30, 30)), similarity(-8, 0.95, (-4, 1), (30, 30))]
    landmarks = np.stack([apply(m, first) for m in truth])
    landmarks[1:, 9:] += rng.normal(0, 4, (2, 3, 2))       # the mouth, eyes and jaw move on their own
    landmarks[1:, 7:9] += rng.normal(0, 2, (2, 2, 2))
    landmarks[1:, :4] += rng.normal(0, 3, (2, 4, 2))
    motion = motion_from_landmarks(landmarks, regions)
    assert motion.shape == (3, 2, 3) and motion.dtype == np.float32
    for found, expected in zip(motion, truth):
        np.testing.assert_allclose(found, expected, atol=1e-4)


def test_retime_plays_the_motion_back_and_forth_at_the_output_rate():
    motion = np.arange(3, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    picked = retime(motion, 10.0, 10.0, 9)[:, 0, 0]
    assert picked.tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]           # never a jump from the last frame to the first
    assert retime(motion, 20.0, 10.0, 2)[:, 0, 0].tolist() == [0, 2]  # half the rate: every other frame
    assert retime(motion[:1], 25.0, 25.0, 4)[:, 0, 0].tolist() == [0, 0, 0, 0]


def test_a_moved_face_carries_its_landmarks_and_masks_along(tiny_pipe, reference_path):
    face = tiny_pipe.prepare_references([reference_path], 64).faces[0]
    shift = similarity(0, 1.0, (6, 0))
    moved = moved_face(face, shift)
    np.testing.assert_allclose(moved.landmarks, face.landmarks + [6, 0], atol=1e-4)
    assert np.array_equal(moved.image[:, 10:], face.image[:, 4:-6])       # the pixels moved 6 to the right
    assert moved.head_mask[:, 6:].sum() == pytest.approx(face.head_mask[:, :-6].sum(), rel=0.05)
    assert moved.landmark_map.shape == face.landmark_map.shape and not np.array_equal(moved.landmark_map,
                                                                                      face.landmark_map)


def _write_video(path, frames: np.ndarray, fps: int = 25) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "12"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_a_driving_videos_head_motion_is_measured_in_the_photos_crop(tmp_path, reference_path):
    """A video of one photo turned and shifted by known amounts: the motion read from it (a real detector, through
    the video codec) turns by the same angles, and shifts by the same amounts in units of the face's size."""
    from portraittalk_core import face as face_io

    photo = face_io.to_rgb_uint8(reference_path)
    photo = cv2.resize(photo, (256, round(256 * photo.shape[0] / photo.shape[1])), interpolation=cv2.INTER_AREA)
    height, width = photo.shape[:2]
    centre = (width / 2, height / 2)
    # a turn, held, then a shift on top; the checks read held frames, away from the ramps that smoothing rounds
    angles = [0] * 4 + [2, 4, 6, 8] + [8] * 16
    shifts = [0] * 16 + [3, 6, 9, 12] + [12] * 4
    truth = [similarity(a, 1.0, (s, 0), centre) for a, s in zip(angles, shifts)]
    frames = np.stack([cv2.warpAffine(photo, m, (width, height), borderMode=cv2.BORDER_REPLICATE) for m in truth])
    video = tmp_path / "driving.mp4"
    _write_video(video, frames)

    detector = face_io.default_detector()
    resolution = 128
    read = read_head_motion(video, detector, resolution, 0.45)
    assert read.fps == 25.0 and read.resolution == resolution
    motion = read.at(25.0, len(frames), resolution)
    assert motion.shape == (len(frames), 2, 3)
    doubled = read.at(25.0, len(frames), 2 * resolution)            # the same motion in a crop twice the size
    np.testing.assert_allclose(doubled[:, :, :2], motion[:, :, :2])
    np.testing.assert_allclose(doubled[:, :, 2], 2 * motion[:, :, 2], atol=1e-5)
    angle = np.degrees(np.arctan2(motion[:, 1, 0], motion[:, 0, 0]))
    # cv2's positive angle turns counter-clockwise on screen, which in image coordinates (y down) is negative
    np.testing.assert_allclose(-angle[[0, 1, 12, 13, 23]], [0, 0, 8, 8, 8], atol=1.0)
    scale = np.hypot(motion[:, 0, 0], motion[:, 1, 0])
    np.testing.assert_allclose(scale, 1.0, atol=0.03)
    crop_scale = math.sqrt(abs(np.linalg.det(face_io.similarity_transform(
        face_io.select_face(face_io.detect_faces(frames[0], detector), "frame 0").kps,
        face_io.template_kps(resolution, 0.45), face_io.KPS_WEIGHTS)[:, :2])))
    # the last frames hold the turn and add the shift: their difference is the 12 px shift, seen in the crop
    turned, shifted = np.eye(3), np.eye(3)
    turned[:2], shifted[:2] = motion[12], motion[23]
    extra = shifted @ np.linalg.inv(turned)
    assert extra[0, 2] == pytest.approx(12 * crop_scale, abs=1.5)
    assert abs(extra[1, 2]) < 1.5


def test_a_driving_video_without_a_face_or_file_is_named(tmp_path):
    from portraittalk_core import face as face_io

    blank = np.full((6, 96, 96, 3), 127, np.uint8)
    video = tmp_path / "wall.mp4"
    _write_video(video, blank)
    with pytest.raises(FaceError, match="no face found in the driving video wall.mp4"):
        read_head_motion(video, face_io.default_detector(), 64, 0.45)
    with pytest.raises(InputError, match="driving video not found: 'nope.mp4'"):
        read_head_motion(tmp_path / "nope.mp4", face_io.default_detector(), 64, 0.45)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="broken.mp4 cannot be decoded"):
        read_head_motion(tmp_path / "broken.mp4", face_io.default_detector(), 64, 0.45)


def test_the_photo_follows_the_head_motion_frame_by_frame(tiny_pipe, reference_path, monkeypatch):
    """Region mouth with head motion: outside each frame's redrawn cells the frame is the photo moved by that
    frame's transform, pixel for pixel; the structure maps move with it (one per frame); no motion (identity
    transforms) makes the same video as none given."""
    from portraittalk_core.generation.settings import GenerationSettings
    from portraittalk_core.generation.compositing import kept_outside_mouth, paste_weights

    settings = GenerationSettings(steps=2, region="mouth", seed=3)
    audio = (tone(0.5), RATE)
    motion = np.stack([similarity(0, 1.0, (round(4 * math.sin(i)), i % 3)) for i in range(40)])  # more than needed
    structures = []
    forward = tiny_pipe.model.animate_net.forward
    monkeypatch.setattr(tiny_pipe.model.animate_net, "forward", lambda *a, **k: structures.append(a[4].shape)
                        or forward(*a, **k))
    made = []
    result = tiny_pipe([reference_path], audio, None, settings, progress=False, on_frames=made.append,
                       head_motion=motion)
    frames = np.concatenate(made)
    assert len(frames) == result.frames > 8      # more than one clip
    assert all(len(shape) == 5 for shape in structures)          # (b, c, f, h, w): a structure map per frame
    face = tiny_pipe.prepare_references([reference_path], tiny_pipe.config.resolution).faces[0]
    vae_scale = tiny_pipe.config.vae_scale
    for frame, transform in zip(frames, motion):
        moved = moved_face(face, transform)
        outside = paste_weights(kept_outside_mouth(moved, vae_scale), vae_scale)[..., 0] == 0
        assert np.array_equal(frame[outside], moved.image[outside])
    assert not np.array_equal(frames[0], frames[1])

    structures.clear()
    still, held = [], []
    tiny_pipe([reference_path], audio, None, settings, progress=False, on_frames=still.append)
    assert all(len(shape) == 4 for shape in structures)           # one map for the whole clip
    tiny_pipe([reference_path], audio, None, settings, progress=False, on_frames=held.append,
              head_motion=np.eye(2, 3, dtype=np.float32)[None])   # one transform: held for every frame
    difference = np.abs(np.concatenate(still).astype(int) - np.concatenate(held).astype(int))
    assert difference.max() <= 1


def test_bad_head_motion_is_refused(tiny_pipe, reference_path):
    for bad in (np.zeros((4, 3, 3)), np.full((2, 2, 3), np.nan), np.zeros((0, 2, 3))):
        with pytest.raises(InputError, match="head motion must be finite"):
            tiny_pipe([reference_path], (tone(0.3), RATE), None, progress=False, head_motion=bad)
