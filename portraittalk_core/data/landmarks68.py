"""The 68-point landmark scheme (iBUG's), which the synthetic faces are drawn with and shards carry.

Jaw 0-16 (image left to right), brows 17-21 and 22-26, nose bridge 27-30 and base 31-35, eyes 36-41 and 42-47
(outer corner, two upper, inner corner, two lower for the image-left eye; inner corner first for the image-right
one), outer lip 48-59 (48 and 54 are the corners) and inner lip 60-67 (60 and 64 the corners, 62 upper and 66 lower
middle).

A synthetic face needs no detector: its exact landmarks give the keypoints (``kps_from_68``) and so the
'detection' (``synthetic_detection``) that aligns it as ``portraittalk prepare`` aligns a real face.
"""

from __future__ import annotations

import numpy as np

from .. import face as face_io

REGIONS_68: dict[str, np.ndarray] = {
    "outline": np.arange(0, 17),
    "brows": np.arange(17, 27),
    "nose": np.arange(27, 36),
    "eyes": np.arange(36, 48),
    "mouth": np.arange(48, 68),
}


def kps_from_68(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) keypoints in ``face.FaceDetection`` order: eye centres (mean of each eye's six
    contour points), nose tip (30), mouth corners (48, 54)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]]).astype(np.float32)


def synthetic_detection(landmarks: np.ndarray) -> face_io.FaceDetection:
    """The 'detection' of a synthetic clip from its exact landmarks (F, 68, 2): the first frame's points,
    and the clip's median keypoints, so that every frame is aligned by the same steady transform."""
    kps = np.median(np.stack([kps_from_68(lm) for lm in landmarks]), axis=0)
    return face_io.FaceDetection(bbox=np.r_[landmarks[0].min(0), landmarks[0].max(0)], score=1.0, kps=kps,
                                 landmarks=landmarks[0], regions={k: np.asarray(v) for k, v in REGIONS_68.items()},
                                 embedding=None)
