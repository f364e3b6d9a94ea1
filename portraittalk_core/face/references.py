"""Reference faces ready for the generator: ``prepare_references`` loads each photo, finds and chooses its
face, aligns it and normalises its exposure (``normalise_look``), naming the photo in every error.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, PortraitTalkError
from .alignment import AlignedFace, align_face
from .detection import Detector, detect_faces, select_face
from .detector_choice import default_detector
from .images import is_pil_image, is_torch_tensor, to_rgb_uint8
from .look import photo_look


def normalise_look(face: AlignedFace) -> AlignedFace:
    """The aligned face with a very dark or washed-out crop brought to a usual exposure, and its
    ``look`` set so that ``face.look.restore`` gives generated frames the photo's look back.
    A well-exposed colour photo comes back unchanged."""
    look = photo_look(face.image, face.landmarks)
    return replace(face, image=look.apply(face.image), look=look)


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
    if isinstance(images, (str, Path)) or is_pil_image(images):
        return [images]
    if isinstance(images, np.ndarray) or is_torch_tensor(images):
        return list(images) if images.ndim == 4 else [images]  # a batch, or one image
    return list(images)


def _default_label(index: int, image) -> str:
    label = f"reference {index + 1}"
    if isinstance(image, (str, Path)):
        label += f" ({Path(image).name})"
    return label
