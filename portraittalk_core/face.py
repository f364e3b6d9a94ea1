"""Reference faces: load a photo, find the face, and crop it the way the generator expects.

The pipeline reads top to bottom:

1. ``to_rgb_uint8`` turns whatever the user gave (a path, a PIL image, a numpy array, a ComfyUI
   tensor) into one RGB uint8 array, or says exactly what is wrong with it.
2. A ``Detector`` finds faces: ``InsightFaceDetector`` (the models ComfyUI users already have,
   with an ArcFace identity embedding) or ``MediaPipeDetector`` (weights ship inside the
   mediapipe wheel, no embedding). ``default_detector`` picks whichever is available.
3. ``select_face`` keeps one face per photo, ``align_face`` warps it onto a fixed 5-point
   template, and builds the head mask and landmark map the model is conditioned on.
4. ``normalise_look`` brings a very dark or washed-out crop to an exposure the generator knows,
   and notes (``PhotoLook``) how to give generated frames the photo's own look back, grayscale
   included.
5. ``prepare_references`` does all of that for a list of reference photos.

Neither insightface nor mediapipe is imported until a detector is built, so importing this
module never needs them.

Keypoint order everywhere is (left eye, right eye, nose tip, left mouth corner, right mouth
corner), left/right as seen in the image for an upright face (so "left eye" is the subject's
right eye). This is the order insightface's detectors use.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from .errors import FaceError, InputError, PortraitTalkError, PortraitTalkWarning, WeightsError

LANDMARK_REGIONS = ("outline", "brows", "eyes", "nose", "mouth")

# Photos smaller than this cannot hold a face the detectors find reliably.
MIN_IMAGE_SIDE = 64
# Detectors resize internally anyway; running them on a 8000 px photo only costs memory and time.
MAX_DETECTION_SIDE = 4096


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


@dataclass
class FaceDetection:
    """One face found in an image, everything in that image's pixel coordinates."""

    bbox: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    kps: np.ndarray  # (5, 2) left eye, right eye, nose tip, left mouth corner, right mouth corner
    landmarks: np.ndarray  # (N, 2) dense landmarks (106 for insightface, 468 for mediapipe)
    regions: dict[str, np.ndarray]  # name in LANDMARK_REGIONS -> indices into landmarks
    embedding: np.ndarray | None  # (512,) L2-normalised ArcFace embedding, when available


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


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in an RGB uint8 HxWx3 image, in that image's pixel coordinates."""
        ...


# --------------------------------------------------------------------------------------------
# Landmark layouts
# --------------------------------------------------------------------------------------------
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
_LAYOUT_468: dict[str, tuple[tuple[int, ...], ...]] = {
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

_LAYOUTS = {68: _LAYOUT_68, 106: _LAYOUT_106, 468: _LAYOUT_468}

# Mesh points for the 5 keypoints: the eye contours are averaged into eye centres; the nose
# tip and mouth corners are single mesh points. "Left" is image-left (the subject's right).
_MESH_LEFT_EYE = sorted({i for line in _LAYOUT_468["eyes"][:2] for i in line})
_MESH_RIGHT_EYE = sorted({i for line in _LAYOUT_468["eyes"][2:] for i in line})
_MESH_NOSE_TIP = 1
_MESH_MOUTH_CORNERS = (61, 291)

# Which channel of the landmark map each region is drawn into.
_MAP_CHANNEL = {"outline": 0, "brows": 0, "eyes": 1, "nose": 1, "mouth": 2}


def layout_regions(num_landmarks: int) -> dict[str, np.ndarray]:
    """Region index sets for a known landmark layout (68 iBUG, 106 insightface, 468 mediapipe)."""
    layout = _LAYOUTS.get(num_landmarks)
    if layout is None:
        raise InputError(
            f"No landmark layout is known for {num_landmarks} points",
            "use the 68-point iBUG, 106-point insightface or 468-point mediapipe landmarks",
        )
    return {
        name: np.array(sorted({i for line in layout[name] for i in line}), dtype=np.int64)
        for name in LANDMARK_REGIONS
    }


# --------------------------------------------------------------------------------------------
# Loading images
# --------------------------------------------------------------------------------------------


def to_rgb_uint8(image) -> np.ndarray:
    """Any supported image -> contiguous RGB uint8 HxWx3 array.

    Accepts a path (str or Path; EXIF orientation applied), a PIL image of any mode, a numpy
    array (HxW, HxWx1, HxWx3, HxWx4; uint8, uint16, bool, or float in [0, 1]) or a torch tensor
    HxWxC float in [0, 1] (a ComfyUI IMAGE item; a batch of one is accepted too).

    Transparency is composited over white, not dropped: a cut-out portrait with its alpha
    dropped shows whatever colour the transparent pixels happen to store (often black), which
    both the face detector and the generator would take as the real background.

    Raises InputError for a missing or unreadable file, an unsupported type or shape, NaN
    values, or an image smaller than 64 px on a side.
    """
    if isinstance(image, (str, Path)):
        image = _open_image_file(Path(image))
    if _is_pil_image(image):
        array = _pil_to_array(image)
    elif _is_torch_tensor(image):
        array = _torch_to_array(image)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise InputError(
            f"Cannot use an image of type {type(image).__name__}",
            "pass a file path, a PIL image, a numpy array (HxWxC) or a torch tensor (HxWxC)",
        )
    array = _as_hwc(array)
    _check_size(array)
    return np.ascontiguousarray(_channels_to_rgb(_to_uint8(array)))


def _open_image_file(path: Path):
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise InputError(f"Image file not found: {path}", "check the path and file name")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image", "pass the path of one image file")
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now, so a truncated file fails here and not later
            # Phones store portrait photos sideways plus an EXIF flag; honour the flag or the
            # face is lying on its side.
            upright = ImageOps.exif_transpose(opened)
            return upright if upright is not opened else opened.copy()  # outlive the `with`
    except Image.DecompressionBombError:
        raise InputError(
            f"{path} has too many pixels to open safely",
            "downscale the photo (a 1024 to 2048 px portrait is plenty)",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(
            f"Cannot read {path} as an image ({err.__class__.__name__}: {err})",
            "use a PNG, JPEG or WebP photo that opens in an image viewer",
        ) from None


def _is_pil_image(obj) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        return False
    return isinstance(obj, Image.Image)


def _is_torch_tensor(obj) -> bool:
    # Checked by module name so that torch is never imported just to reject a list.
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def _torch_to_array(tensor) -> np.ndarray:
    if tensor.dim() == 4 and tensor.shape[0] == 1:  # a ComfyUI IMAGE batch of one
        tensor = tensor[0]
    if tensor.dim() == 3 and tensor.shape[0] in (1, 3, 4) and tensor.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"Image tensor has shape {tuple(tensor.shape)}, which looks like channels-first",
            "pass it as HxWxC (ComfyUI IMAGE layout), e.g. tensor.permute(1, 2, 0)",
        )
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()  # bfloat16/float16 -> something numpy can hold
    return tensor.numpy()


def _pil_to_array(img) -> np.ndarray:
    """PIL image -> numpy array whose dtype tells its value range (see _to_uint8)."""
    mode = img.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return np.asarray(img)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("P", "PA"):
        # A palette may carry transparency; expand to RGBA so it gets composited like any alpha.
        has_alpha = mode == "PA" or "transparency" in img.info
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)  # 16-bit greyscale, any byte order
    if mode == "I":
        return np.asarray(img, dtype=np.int64)  # 32-bit ints; range decided from the values
    if mode == "F":
        # Pillow keeps 0..255 values when it makes float images (L -> F), so scale to [0, 1].
        return np.asarray(img, dtype=np.float32) / 255.0
    if mode in ("RGBa", "La"):
        return np.asarray(img.convert("RGBA" if mode == "RGBa" else "LA"))
    # CMYK, YCbCr, LAB, HSV: Pillow converts these to RGB correctly.
    try:
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as err:
        raise InputError(
            f"Cannot convert a PIL image in mode {mode!r} to RGB ({err})",
            "save the image as an RGB PNG or JPEG",
        ) from None


def _as_hwc(array: np.ndarray) -> np.ndarray:
    """Shape checks; returns HxWxC."""
    if array.ndim == 4 and array.shape[0] == 1:  # a batch of one
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise InputError(
            f"Image array has shape {array.shape}; expected HxW or HxWxC",
            "pass one image as an HxWx3 (RGB) or HxWx4 (RGBA) array",
        )
    if array.shape[2] not in (1, 2, 3, 4):
        hint = (
            "it looks channels-first; transpose it to HxWxC (np.transpose(a, (1, 2, 0)))"
            if array.shape[0] in (1, 3, 4)
            else "pass an HxWx3 (RGB) or HxWx4 (RGBA) array"
        )
        raise InputError(
            f"Image array has shape {array.shape} with {array.shape[2]} channels", hint
        )
    return array


def _check_size(array: np.ndarray) -> None:
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise InputError(f"Image is empty (shape {array.shape})", "pass a photo with pixels in it")
    if min(height, width) < MIN_IMAGE_SIDE:
        raise InputError(
            f"Image is too small ({width}x{height} px) to find a face in",
            "use a photo at least 256 px on each side",
        )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any supported dtype to uint8, keeping the channels as they are."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return _float_to_uint8(array)
    if np.issubdtype(array.dtype, np.integer):
        return _int_to_uint8(array)
    raise InputError(
        f"Image array has dtype {array.dtype}",
        "pass uint8 (0..255), uint16 or float (0..1) pixel values",
    )


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    if not np.isfinite(array).all():
        raise InputError(
            "Image contains NaN or infinite values",
            "check the step that produced the image; pixel values must be numbers in [0, 1]",
        )
    low, high = float(array.min()), float(array.max())
    tolerance = 1e-3  # resampling overshoot, not a different convention
    if low < -tolerance or high > 1.0 + tolerance:
        raise InputError(
            f"Float image values span [{low:.3g}, {high:.3g}], outside [0, 1]",
            "scale the pixels to [0, 1] (divide 8-bit values by 255) or pass a uint8 array",
        )
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def _int_to_uint8(array: np.ndarray) -> np.ndarray:
    # Generic ints (PIL "I" mode, int32/int64 arrays) do not say their range: take 8-bit if the
    # values fit, else 16-bit, which is what such images almost always are.
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 65535:
        raise InputError(
            f"Integer image values span [{low}, {high}]",
            "pass 8-bit (0..255) or 16-bit (0..65535) pixel values",
        )
    if high <= 255:
        return array.astype(np.uint8)
    return _to_uint8(array.astype(np.uint16))


def _channels_to_rgb(array: np.ndarray) -> np.ndarray:
    """uint8 HxWx{1,2,3,4} -> HxWx3, alpha composited over white."""
    channels = array.shape[2]
    if channels in (2, 4):
        colour, alpha = array[:, :, :-1], array[:, :, -1:]
        array = _over_white(colour, alpha)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint16)
    blended = (colour.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return blended.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------

# The files FaceAnalysis loads for the model packs people actually have. Other pack names are
# accepted as long as their folder holds .onnx files.
INSIGHTFACE_PACK_FILES = {
    "antelopev2": ("scrfd_10g_bnkps.onnx", "2d106det.onnx", "glintr100.onnx"),
    "buffalo_l": ("det_10g.onnx", "2d106det.onnx", "w600k_r50.onnx"),
}
_INSIGHTFACE_INSTALL = "pip install insightface onnxruntime"
# mediapipe's wheels with the face-mesh solution exist for CPython 3.10-3.12 only (requirements.txt says which).
_MEDIAPIPE_INSTALL = ('pip install mediapipe==0.10.14 with the Python that runs PortraitTalk or ComfyUI '
                      "(Python 3.10-3.12 only)")


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


def _missing_insightface_error(root, name: str) -> WeightsError:
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
            raise _missing_insightface_error(root, name)
        try:
            from insightface.app import FaceAnalysis
        except ImportError as err:
            raise WeightsError(
                f"The insightface package is not installed ({err})",
                f"{_INSIGHTFACE_INSTALL}, or leave the insightface folder unset to use mediapipe",
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
        _check_rgb_uint8(image)
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # insightface works in OpenCV's BGR
        with self._lock:
            faces = self._app.get(bgr)
        return [_from_insightface(face) for face in faces]


def _from_insightface(face) -> FaceDetection:
    landmarks = np.asarray(face.landmark_2d_106, dtype=np.float32)
    embedding = getattr(face, "normed_embedding", None)
    return FaceDetection(
        bbox=np.asarray(face.bbox, dtype=np.float32).reshape(4),
        score=float(face.det_score),
        kps=np.asarray(face.kps, dtype=np.float32).reshape(5, 2),
        landmarks=landmarks,
        regions=layout_regions(len(landmarks)),
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
    )


def _import_mediapipe():
    # mediapipe's C++ side logs to stderr on first use; keep what is easy to keep quiet quiet.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import mediapipe
    except ImportError as err:
        raise WeightsError(
            f"The mediapipe package is not installed ({err})",
            f"{_MEDIAPIPE_INSTALL}, or provide insightface models (models/insightface)",
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
        _check_rgb_uint8(image)
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


def _default_insightface_roots() -> list[Path]:
    # insightface's own default (~/.insightface/models/<name>); ComfyUI passes its folder.
    return [Path.home() / ".insightface"]


def default_detector(insightface_root=None, insightface_name: str = "antelopev2") -> Detector:
    """insightface when its model files are there (and the package is installed), else
    mediapipe, else a WeightsError that names both ways out.

    Without ``insightface_root``, insightface's own default folder (~/.insightface) is tried.
    """
    if insightface_root:
        roots = [Path(insightface_root).expanduser()]
    else:
        roots = _default_insightface_roots()
    usable = next((r for r in roots if not missing_insightface_files(r, insightface_name)), None)
    why_not_insightface: WeightsError | None = None
    if usable is not None:
        try:
            return InsightFaceDetector(usable, insightface_name)
        except WeightsError as err:
            why_not_insightface = err
    elif insightface_root:
        why_not_insightface = _missing_insightface_error(roots[0], insightface_name)

    if mediapipe_available():
        if why_not_insightface is not None:  # the user asked for insightface: say why not
            warnings.warn(f"Not using insightface: {why_not_insightface}. Using mediapipe instead",
                          PortraitTalkWarning, stacklevel=2)
        return MediaPipeDetector()

    folder = insightface_model_dir(roots[0], insightface_name)
    reason = why_not_insightface.problem if why_not_insightface else f"no models in {folder}"
    raise WeightsError(
        f"No face detector is available: mediapipe is not installed and insightface cannot be "
        f"used ({reason})",
        f"{_MEDIAPIPE_INSTALL}, or put the insightface '{insightface_name}' model pack in "
        f"{folder} and {_INSIGHTFACE_INSTALL}",
    )


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
    )


# --------------------------------------------------------------------------------------------
# Choosing and aligning a face
# --------------------------------------------------------------------------------------------


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
    _check_rgb_uint8(image)
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


def _check_rgb_uint8(image) -> None:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            and image.dtype == np.uint8):
        described = getattr(image, "shape", type(image).__name__)
        raise InputError(f"Expected an RGB uint8 HxWx3 image, got {described}",
                         "convert it with to_rgb_uint8(image) first")


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
    layout = _LAYOUTS.get(len(points), {})
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


# --------------------------------------------------------------------------------------------
# Exposure and colour: what the generator sees, and what the frames look like
# --------------------------------------------------------------------------------------------
# Generators learn from photos exposed and coloured the usual way. Shown a very dark crop, they
# draw the mouth in the brightness they know, which lands on the dark photo as a glowing patch;
# shown a black-and-white photo, they give it coloured lips. So a crop far outside the usual
# exposure is brought into it before the model sees it, and the frames made from it are taken
# back to the photo's exposure, and to gray for a gray photo (``PhotoLook.restore``).

# Measured on the aligned crop in 0..255, per pixel on its brightest channel for highlights and
# its darkest for shadows: the knot of the tone curve then has (nearly) every channel value on
# the side that is scaled, so hues are kept and the photo's pixels come back exactly.
# Both thresholds are half the range, far from well-exposed photos and from the procedural faces
# the demo model learned from. Normalising a photo that did not need it costs little: the model
# sees it somewhat brighter or darker, and the frames still get the photo's own values back.
# Under-exposed: the crop's highlights (99.5th percentile) stay below this. They are 242 in
# reference.jpg's 64 px crop and 186-250 in 119 procedural faces (darkest skin and background
# included); the astronaut photo scaled to 0.3 of its brightness has 72.
UNDEREXPOSED_HIGHLIGHTS = 128.0
# ... and are lifted to this, the photo's darker values scaled by the same factor.
TARGET_HIGHLIGHTS = 200.0
# Washed out: the darkest 1% of the face (pupils, nostrils, lip line) is lighter than this. It is
# 5 in reference.jpg's crop and 23-101 in the procedural faces (101: the palest).
OVEREXPOSED_FACE_SHADOWS = 128.0
TARGET_FACE_SHADOWS = 60.0
# A crop is gray when its pixels' channels differ by at most this (99th percentile), which
# allows a JPEG's rounding; a photo desaturated to 10% still differs by 15 or more.
GRAY_CHANNEL_SPREAD = 3


@dataclass(frozen=True, eq=False)
class PhotoLook:
    """How an aligned reference's pixels were changed for the generator (``normalise_look``),
    and ``restore``, which gives frames made from it the photo's own look.

    ``tone`` is a piecewise-linear curve, (x knots, y knots) in 0..255, that took the photo's
    pixel values to the ones the generator saw (None: unchanged); values outside the x knots
    clamp to its ends. Its inverse is exact where the curve stretches (nearly all the photo's
    pixels) and within a level or two where it compresses, so pasted-back photo pixels come back
    as they were.
    """

    grayscale: bool = False
    tone: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def changed(self) -> bool:
        """Whether ``restore`` does anything."""
        return self.grayscale or self.tone is not None

    def apply(self, image: np.ndarray) -> np.ndarray:
        """uint8 photo pixels -> what the generator sees."""
        if self.tone is None:
            return image
        return _tone_lut(*self.tone)[image]

    def restore(self, frames):
        """Frames made from the adjusted reference -> in the photo's exposure, gray for a gray
        photo. uint8 arrays (..., 3) in 0..255, float arrays or torch tensors in [0, 1] (ComfyUI
        IMAGE); the same type, shape and dtype come back."""
        if not self.changed:
            return frames
        if _is_torch_tensor(frames):
            import torch

            restored = self.restore(frames.detach().cpu().float().numpy())
            return torch.from_numpy(restored).to(frames.device, frames.dtype)
        frames = np.asarray(frames)
        if frames.dtype == np.uint8:
            if self.tone is not None:
                xs, ys = self.tone
                frames = _tone_lut(ys, xs)[frames]
            if self.grayscale:
                gray = cv2.cvtColor(frames.reshape(-1, frames.shape[-2], 3), cv2.COLOR_RGB2GRAY)
                frames = np.repeat(gray.reshape(*frames.shape[:-1], 1), 3, axis=-1)
            return frames
        values = frames.astype(np.float32)
        if self.tone is not None:
            xs, ys = self.tone
            values = np.interp(values * 255.0, ys, xs).astype(np.float32) / 255.0
        if self.grayscale:
            luma = values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            values = np.repeat(luma[..., None], 3, axis=-1)
        return values.astype(frames.dtype)


def _tone_lut(xs, ys) -> np.ndarray:
    return np.round(np.interp(np.arange(256), xs, ys)).clip(0, 255).astype(np.uint8)


def photo_look(image: np.ndarray, landmarks: np.ndarray) -> PhotoLook:
    """What ``normalise_look`` does to an aligned crop (``image``, RGB uint8) with these landmarks.

    Exposure is a multiplication, so a dark crop's values are scaled by one factor that puts its
    highlights at ``TARGET_HIGHLIGHTS``, and the few brighter ones (up to the crop's brightest)
    share what is left up to 255; a washed-out crop is scaled down from white alike, its face's
    shadows to ``TARGET_FACE_SHADOWS``. The curve ends at the crop's own extremes, not at 0 or
    255, so that what the model draws beyond the photo's range (a brighter tooth) comes back at
    the photo's brightest, not at a highlight the photo never had.
    """
    _check_rgb_uint8(image)
    spread = image.max(axis=2).astype(np.int16) - image.min(axis=2)
    grayscale = bool(np.percentile(spread, 99) <= GRAY_CHANNEL_SPREAD)
    brightest = image.max(axis=2)
    highlights = float(np.percentile(brightest, 99.5))
    tone = None
    if highlights < UNDEREXPOSED_HIGHLIGHTS:
        knot = max(highlights, 1.0)  # an all-black crop: scale what little there is
        top = float(brightest.max())
        tone = ((0.0, knot, top), (0.0, TARGET_HIGHLIGHTS, 255.0)) if top > knot else (
            (0.0, knot), (0.0, TARGET_HIGHLIGHTS))
    else:
        face = head_placement_mask(landmarks, image.shape[0], margin=0.0) > 0
        darkest = image.min(axis=2)
        if face.any():
            shadows = float(np.percentile(darkest[face], 1))
            if shadows > OVEREXPOSED_FACE_SHADOWS:
                knot = min(shadows, 254.0)
                bottom = float(darkest.min())
                tone = ((bottom, knot, 255.0), (0.0, TARGET_FACE_SHADOWS, 255.0)) if bottom < knot else (
                    (knot, 255.0), (TARGET_FACE_SHADOWS, 255.0))
    return PhotoLook(grayscale=grayscale, tone=tone)


def normalise_look(face: AlignedFace) -> AlignedFace:
    """The aligned face with a very dark or washed-out crop brought to a usual exposure, and its
    ``look`` set so that ``face.look.restore`` gives generated frames the photo's look back.
    A well-exposed colour photo comes back unchanged."""
    look = photo_look(face.image, face.landmarks)
    return replace(face, image=look.apply(face.image), look=look)


# --------------------------------------------------------------------------------------------
# All reference photos at once
# --------------------------------------------------------------------------------------------


def prepare_references(
    images: Sequence,
    size: int = 512,
    detector: Detector | None = None,
    labels: Sequence[str] | None = None,
    face_fraction: float = 0.45,
) -> list[AlignedFace]:
    """Load, detect, choose and align one face per reference photo, its exposure normalised for
    the generator (``normalise_look``; each face's ``look`` says how to undo that on frames).

    ``images`` is a list of anything ``to_rgb_uint8`` takes; a single image, or a batch array or
    tensor (BxHxWxC, as ComfyUI passes IMAGE), is accepted too. Errors name the photo
    ("reference 2 (photo.png)") so the user knows which one to replace.
    """
    images = _as_image_list(images)
    if not images:
        raise InputError(
            "No reference images given", "pass at least one photo of the face to animate"
        )
    if labels is not None and len(labels) != len(images):
        raise InputError(f"Got {len(labels)} labels for {len(images)} reference images",
                         "pass one label per image, or none")
    if labels is None:
        labels = [_default_label(i, image) for i, image in enumerate(images)]
    detector = detector if detector is not None else default_detector()
    faces = []
    for index, (image, label) in enumerate(zip(images, labels)):
        try:
            rgb = to_rgb_uint8(image)
        except PortraitTalkError as err:
            raise type(err)(f"{label}: {err.problem}", err.fix) from None
        chosen = select_face(detect_faces(rgb, detector), label)
        aligned = normalise_look(align_face(rgb, chosen, size, face_fraction))
        aligned.source_index, aligned.label = index, label
        faces.append(aligned)
    return faces


def _as_image_list(images) -> list:
    if images is None:
        return []
    if isinstance(images, (str, Path)) or _is_pil_image(images):
        return [images]
    if isinstance(images, np.ndarray) or _is_torch_tensor(images):
        return list(images) if images.ndim == 4 else [images]  # a batch, or one image
    return list(images)


def _default_label(index: int, image) -> str:
    label = f"reference {index + 1}"
    if isinstance(image, (str, Path)):
        label += f" ({Path(image).name})"
    return label
