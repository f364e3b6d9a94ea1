"""The clip loop: long audio generated clip by clip, each clip continuing from the last frames of the one before.

Both hosts drive this one loop with their own two steps: the diffusers pipeline (pipeline.py) and the ComfyUI
Sampler (comfyui/sampling.py). ``denoise(clip, motion)`` returns the latents of the whole clip, frame first
(clip.length, C, h, w), its first ``clip.context`` frames being ``motion``, the previous clip's last frames;
``decode(clip, latents)`` turns the clip's new frames' latents into images, in one batch or several. Only one
clip's latents are alive at a time, so memory does not grow with the audio's length.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from ..clips import Clip
from ..errors import Cancelled

Frames = TypeVar("Frames")


def sample_clips(clips: list[Clip], motion_frames: int,
                 denoise: Callable[[Clip, torch.Tensor | None], torch.Tensor],
                 decode: Callable[[Clip, torch.Tensor], Iterable[Frames]],
                 on_clip: Callable[[Clip], None] | None = None) -> Iterator[Frames]:
    """The decoded frames of every clip in ``clips`` (clips.plan_clips), in order, as ``decode`` yields them."""
    motion = None
    for clip in clips:
        latents = denoise(clip, motion)
        motion = latents[len(latents) - motion_frames:] if motion_frames else None
        yield from decode(clip, latents[clip.context:])
        del latents
        if on_clip is not None:
            on_clip(clip)


def check_cancel(cancel) -> None:
    """Raise ``Cancelled`` if ``cancel`` (a threading.Event, or a callable that returns True to stop) says so."""
    if cancel is None:
        return
    stop = cancel.is_set() if isinstance(cancel, threading.Event) else cancel()
    if stop:
        raise Cancelled("generation cancelled", None)
