"""The mediapipe back end: ``MediaPipeDetector`` finds faces with mediapipe's face detector and takes their
468 landmarks from its face mesh; the weights ship inside the mediapipe wheel. No identity embedding.

The mediapipe package is imported when a detector is built (or ``mediapipe_available`` asks), not with
this module: it is an optional, heavy dependency, and importing the package must never need it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

import cv2
import numpy as np

from ..errors import InputError, WeightsError
from .alignment import apply_affine
from .detection import FaceDetection
from .images import check_rgb_uint8
from .landmarks import LAYOUT_468, layout_regions

# mediapipe's wheels with the face-mesh solution exist for CPython 3.10-3.12 only (requirements.txt says which).
MEDIAPIPE_INSTALL = ('pip install mediapipe==0.10.14 with the Python that runs PortraitTalk or ComfyUI '
                     "(Python 3.10-3.12 only)")


# Mesh points for the 5 keypoints: the eye contours are averaged into eye centres; the nose
# tip and mouth corners are single mesh points. "Left" is image-left (the subject's right).
_MESH_LEFT_EYE = sorted({i for line in LAYOUT_468["eyes"][:2] for i in line})
_MESH_RIGHT_EYE = sorted({i for line in LAYOUT_468["eyes"][2:] for i in line})
_MESH_NOSE_TIP = 1
_MESH_MOUTH_CORNERS = (61, 291)


def _import_mediapipe():
    # mediapipe's C++ side logs to stderr on first use; keep what is easy to keep quiet quiet.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import mediapipe
    except ImportError as err:
        raise WeightsError(
            f"The mediapipe package is not installed ({err})",
            f"{MEDIAPIPE_INSTALL}, or provide insightface models (models/insightface)",
        ) from None
    return mediapipe


@contextlib.contextmanager
def _quiet_protobuf():
    # mediapipe 0.10 calls a deprecated protobuf API on every image; the warning is not ours to fix.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
        yield


def mediapipe_available() -> bool:
    try:
        _import_mediapipe()
    except WeightsError:
        return False
    return True


class MediaPipeDetector:
    """mediapipe's full-range face detector to find faces, plus its 468-point face mesh for the
    landmarks. The weights ship inside the mediapipe wheel. No identity embedding.

    The mesh runs on a crop around each detection, levelled by the detector's eye keypoints:
    the mesh's own detector is short-range and misses small faces in large photos, and this
    way every detection gets its own landmarks without matching meshes to boxes afterwards.
    """

    name = "mediapipe"
    _CROP = 256  # mesh input side in pixels
    _CROP_SCALE = 2.0  # crop side relative to the detection box: whole head, room for rotation

    def __init__(self, min_confidence: float = 0.5):
        if not 0.0 < float(min_confidence) < 1.0:
            raise InputError(
                f"min_confidence must be between 0 and 1, got {min_confidence}",
                "use a value like 0.5",
            )
        mp = _import_mediapipe()
        # Built once and reused: building a graph costs far more than running it.
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=float(min_confidence)
        )
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=3,  # the crop may show a neighbour's face; we keep the centred one
            refine_landmarks=False,  # 468 points; the iris points are not used
            min_detection_confidence=float(min_confidence),
        )
        self._lock = threading.Lock()  # a mediapipe graph runs one image at a time

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        check_rgb_uint8(image)
        if self._detector is None:
            raise InputError("This MediaPipeDetector has been closed", "create a new one")
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        with self._lock, _quiet_protobuf():
            found = self._detector.process(image).detections or []
            faces = []
            for det in found:
                box, eyes = _mediapipe_box_and_eyes(det, width, height)
                landmarks = self._mesh_landmarks(image, box, eyes)
                if landmarks is None:
                    continue  # a face box the mesh could not confirm: unusable anyway
                faces.append(
                    FaceDetection(
                        bbox=_clip_box(box, width, height),
                        score=float(det.score[0]),
                        kps=_mesh_kps(landmarks),
                        landmarks=landmarks,
                        regions=layout_regions(468),
                        embedding=None,
                    )
                )
        return faces

    def _mesh_landmarks(self, image, box, eyes) -> np.ndarray | None:
        """468 landmarks (image pixels) of the face in ``box``, or None."""
        to_crop = _levelled_crop_matrix(box, eyes, self._CROP, self._CROP_SCALE)
        crop = cv2.warpAffine(image, to_crop, (self._CROP, self._CROP), flags=cv2.INTER_LINEAR)
        meshes = self._mesh.process(crop).multi_face_landmarks or []
        if not meshes:
            return None
        points = [
            np.array([(p.x, p.y) for p in mesh.landmark], dtype=np.float32) * self._CROP
            for mesh in meshes
        ]
        centre = np.array([self._CROP / 2, self._CROP / 2], dtype=np.float32)
        best = min(points, key=lambda pts: float(np.linalg.norm(pts.mean(0) - centre)))
        return apply_affine(cv2.invertAffineTransform(to_crop), best[:468])

    def close(self) -> None:
        for graph in (getattr(self, "_detector", None), getattr(self, "_mesh", None)):
            if graph is not None:
                graph.close()
        self._detector = self._mesh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: mediapipe may already be gone
            pass


def _mediapipe_box_and_eyes(det, width: int, height: int):
    """Pixel box (x0, y0, x1, y1) and the two eye keypoints of a mediapipe detection."""
    rel = det.location_data.relative_bounding_box
    box = np.array(
        [rel.xmin * width, rel.ymin * height,
         (rel.xmin + rel.width) * width, (rel.ymin + rel.height) * height],
        dtype=np.float32,
    )
    # Keypoints 0 and 1 are the subject's right and left eye (image-left, image-right upright).
    kp = det.location_data.relative_keypoints
    eyes = np.array([[kp[0].x * width, kp[0].y * height], [kp[1].x * width, kp[1].y * height]],
                    dtype=np.float32)
    return box, eyes


def _levelled_crop_matrix(box, eyes, crop: int, scale: float) -> np.ndarray:
    """Affine image -> crop: centred on the box, eyes level, box side * scale -> crop px."""
    centre = (box[:2] + box[2:]) / 2
    side = max(box[2] - box[0], box[3] - box[1], 1.0) * scale
    dx, dy = eyes[1] - eyes[0]
    angle = np.degrees(np.arctan2(dy, dx))
    pivot = (float(centre[0]), float(centre[1]))
    matrix = cv2.getRotationMatrix2D(pivot, float(angle), crop / side)
    matrix[:, 2] += np.array([crop / 2, crop / 2]) - centre
    return matrix


def _mesh_kps(landmarks: np.ndarray) -> np.ndarray:
    return np.stack([
        landmarks[_MESH_LEFT_EYE].mean(0),
        landmarks[_MESH_RIGHT_EYE].mean(0),
        landmarks[_MESH_NOSE_TIP],
        landmarks[_MESH_MOUTH_CORNERS[0]],
        landmarks[_MESH_MOUTH_CORNERS[1]],
    ]).astype(np.float32)


def _clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.clip(box, [0, 0, 0, 0], [width, height, width, height]).astype(np.float32)
