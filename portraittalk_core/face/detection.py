"""What a face detector gives (``FaceDetection``), what a detector is (the ``Detector`` protocol), running
one on a photo of any size (``detect_faces``) and keeping one face per photo (``select_face``).

Keypoint order everywhere is (left eye, right eye, nose tip, left mouth corner, right mouth corner),
left/right as seen in the image for an upright face (so "left eye" is the subject's right eye). This is
the order insightface's detectors use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ..errors import FaceError, PortraitTalkWarning

# Detectors resize internally anyway; running them on a 8000 px photo only costs memory and time.
MAX_DETECTION_SIDE = 4096


@dataclass
class FaceDetection:
    """One face found in an image, everything in that image's pixel coordinates."""

    bbox: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    kps: np.ndarray  # (5, 2) left eye, right eye, nose tip, left mouth corner, right mouth corner
    landmarks: np.ndarray  # (N, 2) dense landmarks (106 for insightface, 468 for mediapipe)
    regions: dict[str, np.ndarray]  # name in LANDMARK_REGIONS -> indices into landmarks
    embedding: np.ndarray | None  # (512,) L2-normalised ArcFace embedding, when available
    # (512,) the same embedding before its normalisation, when available: Hallo's image projection reads it raw
    # (hallo/datasets/image_processor.py:133-138)
    raw_embedding: np.ndarray | None = None


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in an RGB uint8 HxWx3 image, in that image's pixel coordinates."""
        ...


def detect_faces(
    image: np.ndarray, detector: Detector, max_side: int = MAX_DETECTION_SIDE
) -> list[FaceDetection]:
    """Run ``detector`` on a copy no larger than ``max_side``; results in ``image`` pixels."""
    height, width = image.shape[:2]
    factor = min(1.0, max_side / max(height, width))
    if factor == 1.0:
        return detector.detect(image)
    small_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    # Per-axis factors of the resize actually done (rounding makes them differ slightly).
    fx, fy = small_size[0] / width, small_size[1] / height
    return [_scale_detection(d, 1 / fx, 1 / fy) for d in detector.detect(small)]


def _scale_detection(det: FaceDetection, sx: float, sy: float) -> FaceDetection:
    # cv2.resize maps pixel centres: x_small = (x + 0.5) * f - 0.5, hence the half-pixel terms.
    def points(p):
        return ((np.asarray(p, dtype=np.float32) + 0.5) * np.array([sx, sy], np.float32) - 0.5)

    return FaceDetection(
        bbox=points(det.bbox.reshape(2, 2)).reshape(4),
        score=det.score,
        kps=points(det.kps),
        landmarks=points(det.landmarks),
        regions=det.regions,
        embedding=det.embedding,
        raw_embedding=det.raw_embedding,
    )


def select_face(detections: list[FaceDetection], image_label: str) -> FaceDetection:
    """The face to use from one photo: the only one, or the largest (with a warning)."""
    if not detections:
        raise FaceError(
            f"No face found in {image_label}",
            "use a photo where one face is clearly visible, frontal, at least ~128 px wide",
        )
    chosen = max(detections, key=bbox_area)
    if len(detections) > 1:
        x0, y0, x1, y1 = (int(round(v)) for v in chosen.bbox)
        warnings.warn(
            f"{len(detections)} faces found in {image_label}; animating the largest one, at "
            f"x {x0}..{x1}, y {y0}..{y1} px. To animate another, crop the photo to that face",
            PortraitTalkWarning,
            stacklevel=2,
        )
    return chosen


def bbox_area(det: FaceDetection) -> float:
    x0, y0, x1, y1 = det.bbox
    return float(max(0.0, x1 - x0) * max(0.0, y1 - y0))
