"""Checks of a generation's arguments and paths, made before any model loads.

The command line, the Python API and the ComfyUI nodes all call these, so a bad number, device or
path ends in the same one-line ``InputError`` (problem and fix) within a second, not after the
model and the face detector have loaded, and never in a traceback or in silently wrong frames.

The ranges are declared with the settings (generation/settings.py), as the ComfyUI node inputs' are: a user of
either host meets the same limits.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import fields
from pathlib import Path

import torch

from .errors import InputError
from .generation import settings as generation_settings
from .io.video import VIDEO_FORMATS
from .schedulers import check_sampler

VIDEO_EXTENSIONS = tuple(VIDEO_FORMATS)


def check_number(name: str, value, low: float, high: float, integer: bool = False, default=None) -> None:
    """``value`` is a finite number (an integer where ``integer``) in [low, high]; else an InputError naming
    ``name`` (as the user typed it: a flag or an input) and a value that works."""
    suggestion = default if default is not None else low
    kind = "a whole number" if integer else "a number"
    span = f"from {_shown(low)} to {_shown(high)}"
    problem = f"{name} must be {kind} {span} (got {value!r})"
    fix = f"pass {name} {span}, e.g. {_shown(suggestion)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(problem, fix)
    if isinstance(value, float) and (not math.isfinite(value) or (integer and not value.is_integer())):
        raise InputError(problem, fix)
    if not low <= value <= high:  # ints compared exactly: a 400-digit seed is no float
        raise InputError(problem, fix)


def _shown(number) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def declared_range(name: str) -> tuple:
    """(low, high) of a generation setting (generation/settings.py), for commands that take it with another default."""
    declared = generation_settings.declared(name)
    return declared.low, declared.high


def check_finite(**values) -> None:
    """Every float among ``values`` (a node's inputs, by name) is finite. ComfyUI checks its inputs' min and max,
    but NaN passes both comparisons, and an API prompt can send one."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{name} is {value}, not a number", f"set {name} to a finite number (its default, say)")


def check_resolution(resolution: int, multiple: int, default: int, name: str = "resolution") -> None:
    """A square frame side the model can make: in the declared range and divisible by its latent grid's step."""
    low, high = declared_range("resolution")
    check_number(name, resolution, low, high, integer=True, default=default)
    if resolution % multiple:
        nearest = max(low, round(resolution / multiple) * multiple)
        raise InputError(f"{name} {resolution} is not a multiple of {multiple}",
                         f"use a {name} divisible by {multiple}, e.g. {nearest} (this model's own is {default})")


def check_device(device) -> torch.device:
    """The torch device ``device`` names, if this machine has it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device '{device}'", _device_fix()) from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device '{device}' asked for, but this machine has no usable CUDA GPU "
                             f"(torch {torch.__version__}{'' if torch.version.cuda else ', a CPU-only build'})",
                             "pass --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"device '{device}' asked for, but this machine has {count} CUDA GPU(s)",
                             f"pass --device cuda:0{' to cuda:' + str(count - 1) if count > 1 else ''}")
        return parsed
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return parsed
    raise InputError(f"device '{device}' is not available on this machine", _device_fix())


def _device_fix() -> str:
    usable = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
        ["mps"] if torch.backends.mps.is_available() else [])
    return f"pass --device {' or '.join(usable)}"


def check_dtype(dtype, device: torch.device) -> torch.dtype:
    """The torch dtype named by ``dtype`` (a name or a torch.dtype), if it runs on ``device``."""
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"unknown dtype '{dtype}'", "pass --dtype float32, float16 or bfloat16")
    if device.type == "cpu" and resolved == torch.float16:
        # Several CPU kernels the pipeline needs (resizing among them) have no float16 version.
        raise InputError("float16 does not run on the CPU", "pass --dtype float32 (or bfloat16) on the CPU, or "
                                                            "float16 with --device cuda")
    return resolved


def check_input_file(path, what: str) -> Path:
    """An existing file (not a folder) the user gave as an input."""
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        shown = str(path) if path.is_absolute() else f"{path} (looked in {path.absolute().parent})"
        raise InputError(f"{what} not found: {shown}", "check the file name and folder")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file", "pass the path of the file inside it")
    return path


def check_output_video(out, inputs=()) -> Path:
    """A video path that can be written: an extension naming a container we write, not one of the ``inputs``
    (which the video would replace), and a writable folder (created if missing). Returns it, expanded."""
    out = Path(os.fspath(out)).expanduser()
    if out.is_dir():
        raise InputError(f"the output {out} is a folder", f"name a file in it, e.g. '{out / 'talk.mp4'}'")
    if out.suffix.lower() not in VIDEO_EXTENSIONS:
        stem = out.with_suffix(".mp4").name if out.suffix else out.name + ".mp4"
        raise InputError(f"cannot write a video named '{out.name}': the extension must be one of "
                         f"{', '.join(VIDEO_EXTENSIONS)} (the video is H.264 with AAC sound)",
                         f"name the output e.g. '{stem}'")
    for source in inputs:
        if source is not None and _same_file(out, Path(os.fspath(source)).expanduser()):
            raise InputError(f"the output {out} is also an input ({source}); writing it would destroy the input",
                             f"name a new output file, e.g. '{out.with_name(out.stem + '_talking.mp4')}'")
    folder = out.absolute().parent
    try:  # a real write, not os.access: that says yes to root on read-only file systems
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(f"cannot write the video into '{folder}' ({err.strerror or err})",
                         "choose an output path in a folder you can write to") from None
    return out


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.absolute().resolve() == b.absolute().resolve()


def check_hallo_settings(settings, config, head_motion=None) -> None:
    """Settings that ``resolved`` has filled, against what a model of Hallo's computation (config
    ``reference_inputs`` "hallo") does: it takes no prompt, makes whole frames from noise, and moves the head
    itself; its motion-frame prefix and clip share the motion modules' position table."""
    unsupported = [(settings.prompt or settings.negative_prompt, "a prompt", "leave --prompt and --negative empty"),
                   (settings.region != "face", f"region '{settings.region}'", "use --region face"),
                   (settings.restyle, "--restyle", "leave --restyle off"),
                   (settings.denoise < 1.0, "--denoise below 1", "use --denoise 1"),
                   (head_motion is not None, "a head-motion video", "leave --head-motion out")]
    for used, what, fix in unsupported:
        if used:
            raise InputError(f"{what} does not apply to this model ({config.name}: Hallo's computation, "
                             "which has no text path and generates whole frames)", fix)
    table = config.motion["motion_max_seq_length"]
    if settings.clip_frames + settings.motion_frames > table:
        raise InputError(f"{settings.clip_frames} clip frames and {settings.motion_frames} motion frames make "
                         f"{settings.clip_frames + settings.motion_frames}, more than the motion modules' "
                         f"{table} positions", f"keep the two together at {table} or fewer")


def check_generation_settings(settings, config) -> None:
    """Every setting of ``settings`` (a GenerationSettings, generation/settings.py) in its declared range for
    ``config``'s model, an error naming it as the user set it (a flag, or where there is none, its name). None
    means the model's default and is always fine."""
    clip_frames = settings.clip_frames or config.clip_frames
    for item in fields(settings):
        name, value, declared = item.name, getattr(settings, item.name), generation_settings.declared(item.name)
        if value is None:
            continue
        shown = generation_settings.shown_name(name)
        suggestion = item.default if item.default is not None else getattr(config, name)
        if name == "resolution":
            check_resolution(value, config.vae_scale * 8, config.resolution, shown)
        elif name == "motion_frames":  # fewer than the clip's frames
            check_number(shown, value, declared.low, clip_frames - 1, integer=True,
                         default=min(config.motion_frames, clip_frames - 1))
        elif declared.low is not None:
            integer = generation_settings.value_type(name) is int
            check_number(shown, value, declared.low, declared.high, integer=integer, default=suggestion)
        elif declared.choices and value not in declared.choices:
            raise InputError(f"unknown {name} '{value}'", f"use one of: {', '.join(declared.choices)}")
    check_sampler(settings.sampler)
