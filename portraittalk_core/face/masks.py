"""What the generator is conditioned on besides the crop, drawn from a face's landmarks:
``head_placement_mask`` (where the head may be placed) and ``rasterize_landmarks`` (the 3-channel
landmark map: outline and brows, eyes and nose, mouth).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import InputError
from .landmarks import LANDMARK_LAYOUTS, LANDMARK_REGIONS

# Which channel of the landmark map each region is drawn into.
_MAP_CHANNEL = {"outline": 0, "brows": 0, "eyes": 1, "nose": 1, "mouth": 2}


def head_placement_mask(landmarks: np.ndarray, size: int, margin: float = 0.25) -> np.ndarray:
    """(size, size) float32 mask, 1 within ``margin`` x face size of the landmarks' hull.

    The generator may move the head while talking; this is the area it may use. The margin is
    relative to the face (the larger side of the landmarks' box) so it means the same at any
    crop size, and it grows evenly in every direction (a distance, not a scaled hull).
    """
    points = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    if len(points) < 3 or not np.isfinite(points).all():
        raise InputError("Need at least 3 finite landmarks to build a head mask",
                         "pass the landmarks of a detected face")
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    inside = np.zeros((size, size), dtype=np.uint8)
    cv2.fillConvexPoly(inside, hull, 1)
    face_extent = float(np.max(points.max(0) - points.min(0)))
    # Distance of every pixel from the hull (0 inside it).
    distance = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (distance <= margin * face_extent).astype(np.float32)


def rasterize_landmarks(
    landmarks: np.ndarray,
    regions: dict[str, np.ndarray],
    size: int,
    thickness: int | None = None,
    include: Sequence[str] = LANDMARK_REGIONS,
) -> np.ndarray:
    """(3, size, size) float32 drawing of the landmarks: channel 0 outline and brows, channel 1
    eyes and nose, channel 2 mouth. Regions not in ``include`` leave their channel zero.

    Known layouts (106, 468 points) are drawn as their contour lines; any other landmark set is
    drawn as dots, one per landmark of the region.
    """
    unknown = [name for name in include if name not in _MAP_CHANNEL]
    if unknown:
        raise InputError(f"Unknown landmark region(s) {unknown}",
                         f"use names from {LANDMARK_REGIONS}")
    points = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise InputError("Landmarks contain NaN or infinite values",
                         "pass the landmarks of a detected face")
    if thickness is None:
        thickness = max(1, round(size / 256))  # 2 px at 512: visible after VAE downsampling
    layout = LANDMARK_LAYOUTS.get(len(points), {})
    canvas = np.zeros((3, size, size), dtype=np.uint8)
    for name in include:
        indices = regions.get(name)
        if indices is None or len(indices) == 0:
            continue
        if int(np.max(indices)) >= len(points) or int(np.min(indices)) < 0:
            raise InputError(f"Region {name!r} indexes past the {len(points)} landmarks",
                             "pass the regions that came with these landmarks")
        lines = _region_lines(layout, name, indices)
        _draw(canvas[_MAP_CHANNEL[name]], points, lines, indices, thickness)
    return canvas.astype(np.float32) / 255.0


def _region_lines(layout, name: str, indices) -> list[tuple[int, ...]]:
    """The layout's polylines for a region, restricted to the indices the region has."""
    allowed = set(int(i) for i in indices)
    return [line for line in layout.get(name, ()) if allowed.issuperset(line)]


_SUBPIXEL_BITS = 4  # cv2 drawing with 1/16 px precision, so thin lines do not wobble


def _draw(channel: np.ndarray, points, lines, indices, thickness: int) -> None:
    scale = 1 << _SUBPIXEL_BITS
    fixed = np.round(points * scale).astype(np.int32)
    if lines:
        polylines = [fixed[list(line)].reshape(-1, 1, 2) for line in lines]
        cv2.polylines(channel, polylines, isClosed=False, color=255, thickness=thickness,
                      lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
        return
    for x, y in fixed[np.asarray(indices, dtype=np.int64)]:
        cv2.circle(channel, (int(x), int(y)), thickness * scale, 255, -1, cv2.LINE_AA,
                   _SUBPIXEL_BITS)
