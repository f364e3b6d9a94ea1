"""Which face detector to use: ``default_detector`` gives insightface when its model files are there (and
the package is installed), else mediapipe, else a WeightsError that names both ways out.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import PortraitTalkWarning, WeightsError
from .detection import Detector
from .insightface_detector import (
    INSIGHTFACE_INSTALL,
    InsightFaceDetector,
    insightface_model_dir,
    missing_insightface_error,
    missing_insightface_files,
)
from .mediapipe_detector import MEDIAPIPE_INSTALL, MediaPipeDetector, mediapipe_available


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
        why_not_insightface = missing_insightface_error(roots[0], insightface_name)

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
        f"{MEDIAPIPE_INSTALL}, or put the insightface '{insightface_name}' model pack in "
        f"{folder} and {INSIGHTFACE_INSTALL}",
    )
