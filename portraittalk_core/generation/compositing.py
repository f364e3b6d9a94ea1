"""Region compositing: which latent cells region "mouth" redraws, and the photo's pixels pasted back around them.

Both hosts use these: the diffusers pipeline on uint8 frames (``PhotoFrames.paste``), the ComfyUI host on its float
IMAGE frames (comfyui/region.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .. import face as face_io
from ..conditioning import MOUTH_REGION_MARGIN, mouth_boxes

def kept_outside_mouth(face, vae_scale: int) -> torch.Tensor:
    """(1, 1, 1, h, w) latent mask, 0 on the cells that touch the photo's mouth region and 1 elsewhere."""
    size = face.image.shape[0]
    box = mouth_boxes(face.landmarks[None], np.asarray(face.regions["mouth"]), size, MOUTH_REGION_MARGIN)
    touched = torch.nn.functional.max_pool2d(torch.from_numpy(box), vae_scale)    # (1, 1, h, w)
    return (1 - touched)[:, :, None]


def paste_weights(keep: torch.Tensor, vae_scale: int) -> np.ndarray:
    """(H, W, 1) float32 weight of the generated frame over the photo: 0 outside the redrawn latent cells (``keep``
    is 1 there, (1, 1, 1, h, w)), rising smoothly inside them to 1, so the seam sits inside the redrawn region."""
    redrawn = 1.0 - keep[0, 0, 0].float().cpu().numpy()
    pixels = np.kron(redrawn, np.ones((vae_scale, vae_scale), np.float32))
    soft = cv2.GaussianBlur(pixels, (0, 0), sigmaX=float(vae_scale))
    return (pixels * soft)[..., None].astype(np.float32)


def paste_over_photo(frames, photo, weights):
    """Frames (n, H, W, 3) blended over the photo (H, W, 3), or one photo per frame (n, H, W, 3), of the same scale
    with ``paste_weights`` (H, W, 1) or (n, H, W, 1): float arrays or tensors; uint8 in, uint8 out."""
    photo = photo[None] if photo.ndim == 3 else photo
    blended = photo * (1.0 - weights) + frames * weights
    return np.round(blended).astype(np.uint8) if frames.dtype == np.uint8 else blended


# Restyle keeps the face: the landmarks' hull grown by this share of the face's size (the head placement mask's
# margin is 0.25: that ring holds hair and background, which a restyle redraws).
FACE_MARGIN = 0.1


def face_mask(face) -> np.ndarray:
    """(S, S) float32, 1 on the face itself: the landmarks' hull grown by ``FACE_MARGIN`` of the face's size."""
    return face_io.head_placement_mask(face.landmarks, face.image.shape[0], margin=FACE_MARGIN)



@dataclass
class PhotoFrames:
    """What a clip's frames take from the (first) photo: one entry per frame with head motion, else a single
    entry that holds for every frame. Latents (1, C, F, h, w); structure maps (1, 4, F, S, S); for region mouth
    the latent cells kept from the photo (1, 1, F, h, w), and for its paste the pixels (F, S, S, 3) and the
    weights (F, S, S, 1) of the photo over the generated frames."""

    latents: torch.Tensor
    structure: torch.Tensor
    keep: torch.Tensor | None = None
    images: np.ndarray | None = None
    weights: np.ndarray | None = None

    def paste(self, frames: np.ndarray, first: int) -> np.ndarray:
        """uint8 ``frames`` (n, S, S, 3), the clip's frames ``first`` to ``first + n``, over the photo."""
        if self.images is None:
            return frames
        pick = slice(0, 1) if len(self.images) == 1 else slice(first, first + len(frames))
        return paste_over_photo(frames, self.images[pick], self.weights[pick])

