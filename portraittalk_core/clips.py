"""Long audio in clips: which frames each clip denoises and which it takes from the previous one.

A clip denoises up to ``clip_frames`` frames at once. Every clip after the first starts with the
last ``motion_frames`` frames of the previous one (already generated, re-noised at each step), so
motion carries over, and generates ``clip_frames - motion_frames`` new frames. Memory is bounded by
the clip, not by the audio's length, and every frame of the video is generated exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Clip:
    start: int    # first new frame
    end: int      # one past the last new frame
    context: int  # motion frames before `start` that condition this clip

    @property
    def first(self) -> int:
        """First frame in the clip's window, motion frames included."""
        return self.start - self.context

    @property
    def length(self) -> int:
        return self.end - self.first


def plan_clips(n_frames: int, clip_frames: int, motion_frames: int) -> list[Clip]:
    if n_frames < 1:
        raise InputError("nothing to generate: zero frames", "give audio at least one frame long")
    if not 0 <= motion_frames < clip_frames:
        raise InputError(f"motion frames ({motion_frames}) must be fewer than clip frames ({clip_frames})",
                         "lower --motion-frames or raise --clip-frames")
    clips = [Clip(0, min(clip_frames, n_frames), 0)]
    while clips[-1].end < n_frames:
        start = clips[-1].end
        context = min(motion_frames, start)
        clips.append(Clip(start, min(start + clip_frames - context, n_frames), context))
    return clips
