"""The insightface back end: ``InsightFaceDetector`` runs the model pack ComfyUI users already have (SCRFD
detection, 106-point landmarks, ArcFace identity embedding) from a local folder, and the helpers that say
which of the pack's files are missing.

The insightface package is imported when a detector is built, not with this module: it is an optional,
heavy dependency, and importing the package must never need it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .detection import FaceDetection
from .images import check_rgb_uint8
from .landmarks import layout_regions

# The files FaceAnalysis loads for the model packs people actually have. Other pack names are
# accepted as long as their folder holds .onnx files.
INSIGHTFACE_PACK_FILES = {
    "antelopev2": ("scrfd_10g_bnkps.onnx", "2d106det.onnx", "glintr100.onnx"),
    "buffalo_l": ("det_10g.onnx", "2d106det.onnx", "w600k_r50.onnx"),
}
INSIGHTFACE_INSTALL = "pip install insightface onnxruntime"


def insightface_model_dir(root, name: str = "antelopev2") -> Path:
    """Where FaceAnalysis looks for a model pack: <root>/models/<name>."""
    return Path(root).expanduser() / "models" / name


def missing_insightface_files(root, name: str = "antelopev2") -> list[str]:
    """The model files absent from <root>/models/<name>; empty when the pack is usable."""
    folder = insightface_model_dir(root, name)
    if not folder.is_dir():
        return list(INSIGHTFACE_PACK_FILES.get(name, ("*.onnx",)))
    wanted = INSIGHTFACE_PACK_FILES.get(name)
    if wanted is None:
        return [] if any(folder.glob("*.onnx")) else ["*.onnx"]
    return [f for f in wanted if not (folder / f).is_file()]


def missing_insightface_error(root, name: str) -> WeightsError:
    folder = insightface_model_dir(root, name)
    missing = missing_insightface_files(root, name)
    fix = f"put {', '.join(missing)} in {folder} (the '{name}' insightface model pack)"
    # The antelopev2 zip unpacks into antelopev2/antelopev2/, a very common cause of this error.
    nested = folder / name
    if nested.is_dir() and any(nested.glob("*.onnx")):
        fix = f"move the .onnx files from {nested} up into {folder}"
    return WeightsError(f"insightface model files missing in {folder}: {', '.join(missing)}", fix)


class InsightFaceDetector:
    """insightface FaceAnalysis from a local folder: SCRFD detection, 106-point landmarks and
    the ArcFace identity embedding.

    ``root`` is the folder ComfyUI users already have (``ComfyUI/models/insightface``); the model
    files are looked for in ``<root>/models/<name>/``. Nothing is ever downloaded.
    """

    def __init__(
        self,
        root,
        name: str = "antelopev2",
        det_size=(640, 640),
        providers=("CPUExecutionProvider",),
    ):
        # Check the files before the package: FaceAnalysis downloads a missing pack, and the
        # folder is the part the user most often gets wrong.
        if missing_insightface_files(root, name):
            raise missing_insightface_error(root, name)
        try:
            from insightface.app import FaceAnalysis
        except ImportError as err:
            raise WeightsError(
                f"The insightface package is not installed ({err})",
                f"{INSIGHTFACE_INSTALL}, or leave the insightface folder unset to use mediapipe",
            ) from None
        try:
            self._app = FaceAnalysis(
                name=name,
                root=str(Path(root).expanduser()),
                allowed_modules=["detection", "landmark_2d_106", "recognition"],
                providers=list(providers),
            )
            self._app.prepare(ctx_id=0, det_size=tuple(int(s) for s in det_size))
        except Exception as err:  # onnxruntime raises its own types for corrupt files
            raise WeightsError(
                f"Could not load the insightface models in {insightface_model_dir(root, name)} "
                f"({err.__class__.__name__}: {err})",
                "download the model pack again; a file is probably truncated",
            ) from None
        self.name = f"insightface-{name}"
        self._lock = threading.Lock()  # onnxruntime sessions are shared by ComfyUI's threads

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        check_rgb_uint8(image)
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # insightface works in OpenCV's BGR
        with self._lock:
            faces = self._app.get(bgr)
        return [_from_insightface(face) for face in faces]


def _from_insightface(face) -> FaceDetection:
    landmarks = np.asarray(face.landmark_2d_106, dtype=np.float32)
    embedding = getattr(face, "normed_embedding", None)
    raw = getattr(face, "embedding", None)
    return FaceDetection(
        bbox=np.asarray(face.bbox, dtype=np.float32).reshape(4),
        score=float(face.det_score),
        kps=np.asarray(face.kps, dtype=np.float32).reshape(5, 2),
        landmarks=landmarks,
        regions=layout_regions(len(landmarks)),
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
        raw_embedding=None if raw is None else np.asarray(raw, dtype=np.float32),
    )
