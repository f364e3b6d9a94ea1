"""Reference faces: load a photo, find the face, and crop it the way the generator expects.

The pipeline reads top to bottom, one module a step:

1. ``images``: ``to_rgb_uint8`` turns whatever the user gave (a path, a PIL image, a numpy array, a
   ComfyUI tensor) into one RGB uint8 array, or says exactly what is wrong with it.
2. A ``Detector`` (``detection``) finds faces: ``InsightFaceDetector`` (``insightface_detector``: the
   models ComfyUI users already have, with an ArcFace identity embedding) or ``MediaPipeDetector``
   (``mediapipe_detector``: weights ship inside the mediapipe wheel, no embedding).
   ``default_detector`` (``detector_choice``) picks whichever is available. ``landmarks`` knows the
   landmark layouts the detectors give.
3. ``select_face`` (``detection``) keeps one face per photo, ``align_face`` (``alignment``) warps it
   onto a fixed 5-point template, and builds the head mask and landmark map (``masks``) the model is
   conditioned on.
4. ``normalise_look`` brings a very dark or washed-out crop to an exposure the generator knows, and
   notes (``PhotoLook``, ``look``) how to give generated frames the photo's own look back, grayscale
   included.
5. ``prepare_references`` (``references``) does all of that for a list of reference photos.

Beside them, ``hallo_regions`` prepares a photo the way Hallo's code does for its published weights (issue 26):
``hallo_reference`` gives the squeezed reference pixels, the face-locator input and the full/face/lip region masks
per UNet level, from mediapipe face-mesh landmarks.

Neither insightface nor mediapipe is imported until a detector is built, so importing this
package never needs them.

Keypoint order everywhere is (left eye, right eye, nose tip, left mouth corner, right mouth
corner), left/right as seen in the image for an upright face (so "left eye" is the subject's
right eye). This is the order insightface's detectors use.
"""

from .images import MIN_IMAGE_SIDE, to_rgb_uint8
from .landmarks import LANDMARK_REGIONS, layout_regions
from .detection import MAX_DETECTION_SIDE, Detector, FaceDetection, bbox_area, detect_faces, select_face
from .insightface_detector import (
    INSIGHTFACE_PACK_FILES,
    InsightFaceDetector,
    insightface_model_dir,
    missing_insightface_files,
)
from .mediapipe_detector import MediaPipeDetector, mediapipe_available
from .detector_choice import default_detector
from .masks import head_placement_mask, rasterize_landmarks
from .alignment import (
    FACE_TEMPLATE,
    KPS_WEIGHTS,
    TEMPLATE_EYE_HEIGHT,
    AlignedFace,
    align_face,
    apply_affine,
    compose_affine,
    similarity_transform,
    template_kps,
)
from .look import (
    GRAY_CHANNEL_SPREAD,
    OVEREXPOSED_FACE_SHADOWS,
    TARGET_FACE_SHADOWS,
    TARGET_HIGHLIGHTS,
    UNDEREXPOSED_HIGHLIGHTS,
    PhotoLook,
    photo_look,
)
from .references import normalise_look, prepare_references
from .hallo_regions import HALLO_REGIONS, HalloReference, hallo_reference

__all__ = [
    "MIN_IMAGE_SIDE", "to_rgb_uint8",
    "LANDMARK_REGIONS", "layout_regions",
    "MAX_DETECTION_SIDE", "Detector", "FaceDetection", "bbox_area", "detect_faces", "select_face",
    "INSIGHTFACE_PACK_FILES", "InsightFaceDetector", "insightface_model_dir", "missing_insightface_files",
    "MediaPipeDetector", "mediapipe_available",
    "default_detector",
    "head_placement_mask", "rasterize_landmarks",
    "FACE_TEMPLATE", "KPS_WEIGHTS", "TEMPLATE_EYE_HEIGHT", "AlignedFace", "align_face", "apply_affine",
    "compose_affine", "similarity_transform", "template_kps",
    "GRAY_CHANNEL_SPREAD", "OVEREXPOSED_FACE_SHADOWS", "TARGET_FACE_SHADOWS", "TARGET_HIGHLIGHTS",
    "UNDEREXPOSED_HIGHLIGHTS", "PhotoLook", "photo_look",
    "normalise_look", "prepare_references",
    "HALLO_REGIONS", "HalloReference", "hallo_reference",
]
