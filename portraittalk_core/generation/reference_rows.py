"""Hallo's clip loop, the rules no host owns (config ``reference_inputs`` "hallo"; docs/hallo.md, "Clip loop").

Each clip continues from motion frames that go through the reference pass beside the photo: the photo itself for the
first clip, then the previous clip's last frames as decoded. The diffusers pipeline and the ComfyUI Sampler both build
a clip's reference rows with ``reference_rows`` and keep only ``frames_of_the_audio`` of each clip.
"""

from __future__ import annotations

import torch

from ..clips import Clip


def decoded_as_motion(frames: torch.Tensor) -> torch.Tensor:
    """Frames (n, 3, H, W) as the VAE decoded them, in float, as their next clip reads them: brought to [0, 1] and
    clamped, then back to [-1, 1] (hallo/animate/face_animate.py decode_latents; scripts/inference.py:301-306)."""
    return (frames / 2 + 0.5).clamp(0, 1) * 2.0 - 1.0


def dropped_outside_face(motion: torch.Tensor, face_box: torch.Tensor, rate: float, generator) -> torch.Tensor:
    """Motion frames (n, 3, H, W) with one random share ``rate`` of their pixels zeroed outside the face box
    (``face_box`` (1, 3, H, W), its non-zero pixels; one draw for all frames and channels): Hallo2's long mode, which
    trains and runs its motion modules on such frames (hallo2 scripts/inference_long.py:404-418)."""
    kept = torch.rand(motion.shape[-2:], generator=generator).to(motion.device) > rate
    return motion * (kept | face_box[0].bool())


def reference_rows(photo: torch.Tensor, motion: torch.Tensor | None, motion_frames: int, drop: float = 0.0,
                   face_box: torch.Tensor | None = None, generator=None) -> torch.Tensor:
    """The rows a clip's reference pass reads, (1 + motion_frames, 3, H, W): the photo (1, 3, H, W), then ``motion``
    (``decoded_as_motion`` frames; None for the first clip, which continues from the photo itself), Hallo2's pixel
    drop applied (``drop`` > 0, drawn from ``generator`` before the clip's noise, as theirs). A batch with no negative
    value is read as [0, 1] and mapped to [-1, 1], as diffusers' VaeImageProcessor does it in their pipeline."""
    motion = photo.expand(motion_frames, -1, -1, -1) if motion is None else motion
    if drop:
        motion = dropped_outside_face(motion, face_box, drop, generator)
    rows = torch.cat([photo, motion])
    return rows * 2.0 - 1.0 if rows.min() >= 0 else rows


def frames_of_the_audio(clip: Clip, n_frames: int) -> int:
    """How many of ``clip``'s frames the audio covers: the audio is padded to whole clips, the padding's frames are
    made and dropped (scripts/inference.py:341-343)."""
    return max(0, min(clip.length, n_frames - clip.start))
