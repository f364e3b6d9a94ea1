"""Head motion from a driving video, or from the speech: how a head moves, applied to the photo.

Speech says what the mouth does, not where the head goes: without help the mouth region ("mouth") keeps the
photo's head still and the whole frame ("face") moves it only as much as the model guesses. A driving video
says it: any video of a talking head, anyone's, whose head's movement since its first frame is applied to the
photo, frame by frame ("relative motion", as face reenactment transfers it).

Each frame's movement is a similarity transform (rotation, uniform scale, shift) fitted to the landmarks that
move with the skull only (brows and nose; see ``RIGID_REGIONS``), in the coordinates of the
video's first face aligned as a reference photo is (face.align_face). The photo is aligned to the same template,
so the movement carries over whatever size and place the two faces have in their pictures.

Without a driving video, a model with a head-motion module (models/head_pose.py; the demo model has one) predicts
the same kind of movement from the speech (``motion_from_speech``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import av
import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from . import face as face_io
from .errors import FaceError, InputError
from .io.video import NoVideoStream, video_frames
from .models import movement_since_first

# The landmarks that move with the head, not on their own. Not the eyes (blinks) or the mouth, and not the outline:
# its lower half is the jaw, which drops as the mouth opens, so a fit to it moves the whole photo with the driver's
# speech (measured: fitted to outline, brows and nose, the eval's ground-truth head motion carried the mouth's
# opening into the photo's placement, and lip sync read 0.87 where the model alone makes 0.65).
RIGID_REGIONS = ("brows", "nose")
# Detected landmarks jitter by a pixel or two from frame to frame; the transforms are smoothed over this many
# frames (Gaussian sigma) so that the photo does not shake. Exact landmarks are used as they are.
DETECTION_SMOOTHING = 1.5
# The head-motion module predicts each frame's placement from the speech around that frame, and its predictions
# tremble from frame to frame, as no head does (the synth's heads move on a 0.25 s time scale): ADFD read the
# tremble as an unstable face (stability 0.57 on the landmarks moved by the prediction alone; 0.80 for the true
# motion). A Gaussian of this many seconds (sigma) over time removes it. Chosen on the synth's validation clips,
# where it was the smoothing with the least error against the true motion (2.89 against 2.92 unsmoothed, 2.90 at
# 0.06 s) and brought the stability to the true motion's (0.79).
SPEECH_SMOOTHING_S = 0.04


def rigid_indices(regions: dict) -> np.ndarray:
    return np.concatenate([np.asarray(regions[name]) for name in RIGID_REGIONS])


def motion_from_landmarks(landmarks: np.ndarray, regions: dict) -> np.ndarray:
    """(F, 2, 3) float32: for each frame, the similarity transform taking the first frame's rigid landmarks onto
    that frame's (the first is the identity). ``landmarks`` (F, N, 2) in one fixed image's coordinates."""
    rigid = rigid_indices(regions)
    return np.stack([face_io.similarity_transform(landmarks[0, rigid], points[rigid])
                     for points in landmarks]).astype(np.float32)


def retime(motion: np.ndarray, source_fps: float, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames, 2, 3): ``motion`` sampled at ``source_fps`` taken at the output frames' times (nearest frame).
    Audio longer than the video plays the motion forward, then backward, and so on: the head never jumps."""
    times = np.arange(n_frames) / fps
    index = np.round(times * source_fps).astype(int)
    period = max(1, 2 * (len(motion) - 1))
    index = index % period
    index = np.where(index < len(motion), index, period - index)
    return motion[index]


@dataclass
class HeadMotion:
    """A driving video's head motion: one transform (2, 3) a frame at ``fps``, in the pixels of a ``resolution``
    crop aligned as the photo is."""

    transforms: np.ndarray
    fps: float
    resolution: int

    def at(self, fps: float, n_frames: int, resolution: int) -> np.ndarray:
        """(n_frames, 2, 3) for an output at ``fps`` and ``resolution`` (a similarity transform in a crop k times
        larger is the same turn and scale with a k times larger shift)."""
        transforms = self.transforms.copy()
        transforms[:, :, 2] *= resolution / self.resolution
        return retime(transforms, self.fps, fps, n_frames)


def motion_from_frames(frames: Iterable[np.ndarray], detector, resolution: int, face_fraction: float,
                       label: str) -> np.ndarray:
    """(F, 2, 3) head motion of RGB uint8 ``frames`` (one transform each), in the pixels of a ``resolution`` crop
    aligned with ``face_fraction`` (the photo's), smoothed against detector jitter. Frames where no face is found
    keep the nearest earlier face's pose; ``label`` names the frames in the error when none has a face."""
    found: list[np.ndarray | None] = []
    regions, crop = None, None
    for frame in frames:
        detections = face_io.detect_faces(frame, detector)
        if not detections:
            found.append(None)
            continue
        chosen = max(detections, key=face_io.bbox_area)
        if crop is None:  # the first face found is the one the motion is measured from
            template = face_io.template_kps(resolution, face_fraction)
            crop = face_io.similarity_transform(chosen.kps, template, face_io.KPS_WEIGHTS)
            regions = chosen.regions
        found.append(face_io.apply_affine(crop, chosen.landmarks))
    if crop is None:
        raise FaceError(f"no face found in {label} ({len(found)} frames read)",
                        "drive the head motion with a video where one face is clearly visible")
    motion = motion_from_landmarks(np.stack(_fill_gaps(found)), regions)
    return gaussian_filter1d(motion, DETECTION_SMOOTHING, axis=0, mode="nearest")


def read_head_motion(path, detector, resolution: int, face_fraction: float, seconds: float | None = None,
                     max_fps: float | None = None) -> HeadMotion:
    """The head motion of the driving video at ``path``: its first ``seconds`` (None: all of it), read at most
    ``max_fps`` frames a second (no need to read more often than the output's frame rate)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"driving video not found: '{path.name}' in '{path.parent.resolve()}'",
                         "check the path given to --head-motion")
    try:
        with video_frames(path, seconds=seconds, max_fps=max_fps) as (frames, fps):
            transforms = motion_from_frames(frames, detector, resolution, face_fraction,
                                            f"the driving video {path.name}")
    except NoVideoStream:
        raise InputError(f"{path.name} has no video stream", "give --head-motion a video of a talking head") from None
    except av.error.FFmpegError as err:
        raise InputError(f"the driving video {path.name} cannot be decoded ({err})",
                         "re-encode it with ffmpeg, or give another video") from err
    return HeadMotion(transforms, fps, resolution)


def motion_from_speech(model, audio_windows: torch.Tensor, fps: float, resolution: int,
                       smoothing: float = SPEECH_SMOOTHING_S) -> HeadMotion:
    """The head's movement since the first frame that ``model``'s head-motion module (models/head_pose.py) predicts
    from the speech, in the pixels of a ``resolution`` crop. ``audio_windows``: (F, W, L, C), each frame's feature
    window (audio.AudioFeatures.frames), its own features at the centre. ``smoothing``: the Gaussian (sigma, in
    seconds) over time that takes out the prediction's frame-to-frame tremble; 0 keeps it as predicted."""
    if model.head_motion is None:
        raise InputError(f"this PortraitTalk model ('{model.config.name}' config) does not predict head motion from "
                         "speech", "drive the head with a video (PortraitTalk Head Motion, or --head-motion VIDEO), "
                         "or use a model trained with stage motion (the demo model is)")
    if smoothing < 0:
        raise InputError(f"head motion smoothing must be 0 or more seconds (got {smoothing})",
                         f"pass 0 for none, or e.g. {SPEECH_SMOOTHING_S}")
    weight = next(model.head_motion.parameters())
    features = audio_windows[:, model.config.audio_window][None].to(weight.device, weight.dtype)
    with torch.inference_mode():
        offsets = model.head_motion(features).float().cpu().numpy()
    if smoothing > 0:   # the placement offsets, not the movement, so that the first frame stays the photo exactly
        offsets = gaussian_filter1d(offsets, smoothing * fps, axis=1, mode="nearest")
    movement = movement_since_first(torch.from_numpy(offsets))[0].numpy()
    movement[:, :, 2] *= resolution
    return HeadMotion(movement, float(fps), resolution)


def _fill_gaps(found: list) -> list[np.ndarray]:
    """Frames without a face take the nearest earlier face's landmarks (the first face's, before it)."""
    first = next(points for points in found if points is not None)
    filled, last = [], first
    for points in found:
        last = points if points is not None else last
        filled.append(last)
    return filled


def moved_face(face, transform: np.ndarray):
    """The aligned face (face.AlignedFace) moved by ``transform`` (2, 3): its image warped (edges replicated, as
    the crop's own are), its landmarks, key points and the masks drawn from them moved with it."""
    size = face.image.shape[0]
    landmarks = face_io.apply_affine(transform, face.landmarks)
    image = cv2.warpAffine(face.image, transform.astype(np.float64), (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    return replace(face, image=image, landmarks=landmarks, kps=face_io.apply_affine(transform, face.kps),
                   matrix=face_io.compose_affine(transform, face.matrix).astype(np.float32),
                   head_mask=face_io.head_placement_mask(landmarks, size),
                   landmark_map=face_io.rasterize_landmarks(landmarks, face.regions, size))
