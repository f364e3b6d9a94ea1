"""Landmark layouts: which of a face's dense landmarks make up each region (outline, brows, eyes, nose,
mouth), and the polylines that draw them. A layout is known by its number of points: 68 (iBUG), 106
(insightface) or 468 (mediapipe face mesh).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

LANDMARK_REGIONS = ("outline", "brows", "eyes", "nose", "mouth")


# Each layout lists, per region, the polylines that draw it (a closed loop repeats its first
# index at the end). The region index sets are the union of those polylines, so the drawing and
# the regions cannot disagree. Layouts are keyed by landmark count, which identifies them.

# insightface 2d106det. The model's point numbering is not in drawing order (the jaw runs
# 1, 9..16, 2..8, 0 = chin, ...); this order is the one insightface's mark-up figure shows.
_LAYOUT_106: dict[str, tuple[tuple[int, ...], ...]] = {
    "outline": (
        (1, 9, 10, 11, 12, 13, 14, 15, 16, 2, 3, 4, 5, 6, 7, 8, 0,
         24, 23, 22, 21, 20, 19, 18, 32, 31, 30, 29, 28, 27, 26, 25, 17),
    ),
    "brows": (
        (43, 44, 45, 47, 46, 50, 51, 49, 48, 43),
        (97, 98, 99, 100, 101, 105, 104, 103, 102, 97),
    ),
    "eyes": (
        (35, 36, 33, 37, 39, 42, 40, 41, 35),
        (34, 38),  # pupil: drawn as a short stroke so the map carries gaze
        (89, 90, 87, 91, 93, 96, 94, 95, 89),
        (88, 92),
    ),
    "nose": (
        (72, 73, 74, 86),  # bridge
        (75, 76, 77, 78, 79, 80, 85, 84, 83, 82, 81),  # wings and base
    ),
    "mouth": (
        (52, 55, 56, 53, 59, 58, 61, 68, 67, 71, 63, 64, 52),  # outer lip
        (65, 54, 60, 57, 69, 70, 62, 66, 65),  # inner lip
    ),
}

# mediapipe face mesh (468 points): mediapipe's FACEMESH_FACE_OVAL, _LEFT/RIGHT_EYEBROW,
# _LEFT/RIGHT_EYE, _NOSE and _LIPS connection sets, chained into polylines. Written out here so
# that landmarks can be drawn without mediapipe installed (a test checks them against it).
LAYOUT_468: dict[str, tuple[tuple[int, ...], ...]] = {
    "outline": (
        (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
         377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
         109, 10),
    ),
    "brows": (
        (46, 53, 52, 65, 55),
        (70, 63, 105, 66, 107),
        (276, 283, 282, 295, 285),
        (300, 293, 334, 296, 336),
    ),
    "eyes": (
        (33, 7, 163, 144, 145, 153, 154, 155, 133),
        (33, 246, 161, 160, 159, 158, 157, 173, 133),
        (263, 249, 390, 373, 374, 380, 381, 382, 362),
        (263, 466, 388, 387, 386, 385, 384, 398, 362),
    ),
    "nose": (
        (168, 6, 197, 195, 5, 4, 45, 220, 115, 48, 64, 98, 97, 2, 326, 327, 294, 278, 344, 440,
         275, 4, 1, 19, 94, 2),
    ),
    "mouth": (
        (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291),
        (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291),
        (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308),
        (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308),
    ),
}

# The 68-point iBUG layout (dlib, FAN, and the procedural dataset's exact landmarks).
_LAYOUT_68: dict[str, tuple[tuple[int, ...], ...]] = {
    "outline": (tuple(range(0, 17)),),
    "brows": (tuple(range(17, 22)), tuple(range(22, 27))),
    "eyes": ((36, 37, 38, 39, 40, 41, 36), (42, 43, 44, 45, 46, 47, 42)),
    "nose": (tuple(range(27, 31)), tuple(range(31, 36))),
    "mouth": ((*range(48, 60), 48), (*range(60, 68), 60)),
}

LANDMARK_LAYOUTS = {68: _LAYOUT_68, 106: _LAYOUT_106, 468: LAYOUT_468}


def layout_regions(num_landmarks: int) -> dict[str, np.ndarray]:
    """Region index sets for a known landmark layout (68 iBUG, 106 insightface, 468 mediapipe)."""
    layout = LANDMARK_LAYOUTS.get(num_landmarks)
    if layout is None:
        raise InputError(
            f"No landmark layout is known for {num_landmarks} points",
            "use the 68-point iBUG, 106-point insightface or 468-point mediapipe landmarks",
        )
    return {
        name: np.array(sorted({i for line in layout[name] for i in line}), dtype=np.int64)
        for name in LANDMARK_REGIONS
    }
