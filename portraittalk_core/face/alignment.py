"""Aligning a detected face: ``align_face`` warps it onto a fixed 5-point portrait template
(``template_kps``) with a weighted similarity transform, and gives the ``AlignedFace`` the generator
works from: the crop, its keypoints and landmarks, the head mask and the landmark map.

The affine helpers (``similarity_transform``, ``apply_affine``, ``compose_affine``) are the ones head
motion uses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import FaceError, InputError
from .detection import FaceDetection
from .images import MIN_IMAGE_SIDE, check_rgb_uint8
from .look import PhotoLook
from .masks import head_placement_mask, rasterize_landmarks


@dataclass
class AlignedFace:
    """A reference face warped onto the portrait template, ready for the generator."""

    image: np.ndarray  # (size, size, 3) uint8 aligned crop (head, hair, some background)
    matrix: np.ndarray  # (2, 3) affine from source image pixels to crop pixels
    kps: np.ndarray  # (5, 2) in crop pixels
    landmarks: np.ndarray  # (N, 2) in crop pixels
    regions: dict[str, np.ndarray]
    head_mask: np.ndarray  # (size, size) float32 in {0, 1}: where the head may be placed
    landmark_map: np.ndarray  # (3, size, size) float32: outline+brows, eyes+nose, mouth
    embedding: np.ndarray | None
    source_index: int  # which input image it came from
    label: str = ""  # how messages name that image: "reference 2 (photo.png)"
    # How ``image`` differs from the photo's own crop, and how to undo it on generated frames.
    look: "PhotoLook" = field(default_factory=lambda: PhotoLook())


# The 5-point template of an average frontal face, in "face units": origin midway between the
# eyes, x to the image right, y down, 1 = distance from the eye line to the chin. Derived from
# insightface's 112 px ArcFace template (the mean of many aligned faces), made symmetric. That
# template has no chin; it is put 1.68 inter-ocular distances below the eye line, as measured on
# a frontal face mesh, so "eyes to chin" is approximate. Order as FaceDetection.kps.
FACE_TEMPLATE = np.array(
    [
        [-0.297, 0.000],  # left eye
        [0.297, 0.000],  # right eye
        [0.000, 0.339],  # nose tip
        [-0.246, 0.685],  # left mouth corner
        [0.246, 0.685],  # right mouth corner
    ],
    dtype=np.float64,
)
# Portrait framing: the eye line sits at this fraction of the crop height, centred horizontally.
TEMPLATE_EYE_HEIGHT = 0.42


def template_kps(size: int = 512, face_fraction: float = 0.45) -> np.ndarray:
    """Where ``align_face`` puts the 5 keypoints in a size x size crop.

    The eyes-to-chin distance is ``face_fraction`` of the crop height and the eye line is at
    ``TEMPLATE_EYE_HEIGHT``. At the default 0.45 this is a close portrait: chin near 0.87 of
    the height, and the top of the hair can touch the top edge (the skull top is about one
    eyes-to-chin distance above the eyes). Around 0.33 shows the whole head with background.
    """
    unit_square = np.array([0.5, TEMPLATE_EYE_HEIGHT]) + face_fraction * FACE_TEMPLATE
    return (unit_square * size).astype(np.float32)


# How much each keypoint pulls on the alignment. The eyes are rigid and precisely located; the
# nose tip sticks out, so its image position shifts when the head tips up or down; the mouth
# corners move with every smile and syllable. Weighting them this way keeps the framing of a
# grinning or mid-sentence photo close to that of a neutral one.
KPS_WEIGHTS = np.array([1.0, 1.0, 0.5, 0.25, 0.25])


def similarity_transform(src: np.ndarray, dst: np.ndarray, weights=None) -> np.ndarray:
    """Weighted least-squares rotation + uniform scale + shift taking src to dst (Umeyama 1991).

    Closed form rather than a robust estimator: with five points there is nothing to reject,
    and a closed form gives the same crop for the same photo every time.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    src_mean, dst_mean = w @ src, w @ dst
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = float(w @ (src_c**2).sum(1))
    if not np.isfinite(src_var) or src_var < 1e-6:
        raise FaceError(
            "The face keypoints are missing or all at one point",
            "use a photo where the face is clearly visible and at least ~128 px wide",
        )
    cov = (dst_c * w[:, None]).T @ src_c
    u, sigma, vt = np.linalg.svd(cov)
    # A reflection is never a valid alignment: flip the weakest axis instead.
    d = np.diag([1.0, -1.0 if np.linalg.det(u @ vt) < 0 else 1.0])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d)) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine that applies ``inner`` first, then ``outer``."""
    linear = outer[:, :2] @ inner[:, :2]
    shift = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return np.hstack([linear, shift[:, None]])


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """warpAffine, first shrinking the source when the warp shrinks a lot.

    Bilinear warping samples only four source pixels per output pixel, so reducing a 5000 px
    photo to a 512 px crop that way aliases (jagged hair, moire). An area resize first does it
    properly; the matrix is adjusted so the output is the same crop.
    """
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.75:
        height, width = image.shape[:2]
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
        fx, fy = small_size[0] / width, small_size[1] / height
        # small pixel -> source pixel: x = (x_small + 0.5) / f - 0.5
        small_to_source = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5]])
        matrix = compose_affine(matrix, small_to_source)
    # Replicate rather than reflect: a reflected border can mirror a second face into the crop.
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def align_face(
    image: np.ndarray, det: FaceDetection, size: int = 512, face_fraction: float = 0.45
) -> AlignedFace:
    """Warp the detected face onto the portrait template (see ``template_kps``).

    A similarity transform (rotation, uniform scale, shift) fitted to the 5 keypoints (weighted
    by ``KPS_WEIGHTS``), so the face keeps its proportions; landmarks and keypoints go through
    the same matrix. Faces whose proportions differ from the average template (a broad smile, a
    tilted head) land within a few pixels of it, not exactly on it.
    """
    check_rgb_uint8(image)
    if int(size) != size or size < MIN_IMAGE_SIDE:
        raise InputError(f"Aligned face size must be an integer >= {MIN_IMAGE_SIDE}, got {size}",
                         "use 512, the size the generator works at")
    if not 0.1 <= face_fraction <= 0.9:
        raise InputError(f"face_fraction must be between 0.1 and 0.9, got {face_fraction}",
                         "use about 0.45 (eyes to chin take 45% of the crop height)")
    size = int(size)
    matrix = similarity_transform(det.kps, template_kps(size, face_fraction), KPS_WEIGHTS)
    landmarks = apply_affine(matrix, det.landmarks)
    return AlignedFace(
        image=_warp(image, matrix, size),
        matrix=matrix.astype(np.float32),
        kps=apply_affine(matrix, det.kps),
        landmarks=landmarks,
        regions=det.regions,
        head_mask=head_placement_mask(landmarks, size),
        landmark_map=rasterize_landmarks(landmarks, det.regions, size),
        embedding=det.embedding,
        source_index=0,
    )
