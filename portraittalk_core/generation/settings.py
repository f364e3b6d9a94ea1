"""What a generation can be asked for, declared once.

Every field of ``GenerationSettings`` carries its help text and its range. The ``portraittalk generate`` and ``eval``
options (cli.py), the ComfyUI node inputs (nodes/inputs.py) and the checks made before any model loads
(checks.check_generation_settings) are all made from these declarations, so a default, a limit or a help text is
changed here and nowhere else.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..schedulers import SCHEDULERS

REGIONS = ("face", "mouth")


@dataclass(frozen=True)
class Declared:
    """How a setting is shown to users: its help (a CLI help line, a node tooltip), its range and a widget's step."""

    help: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    # The command-line flag where it is not ``--<name with dashes>``; "" where the command line does not offer it.
    flag: str | None = None
    # Where the default is None ("the model's"): what a widget, which cannot be None, shows for it. ``unset`` is a
    # value outside the range that stands for None; ``shown`` a value inside it that a node starts from.
    unset: Any = None
    shown: Any = None


def _setting(default, help: str, **declared) -> Any:
    return field(default=default, metadata={"declared": Declared(help, **declared)})


GUIDANCE = dict(low=0.0, high=30.0, step=0.1)   # classifier-free guidance scales
STRENGTH = dict(low=0.0, high=2.0, step=0.05)   # weights of the added attention paths and the temporal modules


@dataclass
class GenerationSettings:
    prompt: str = _setting("", "text customisation, e.g. 'with red hair, smiling'")
    negative_prompt: str = _setting("", "negative prompt", flag="--negative")
    steps: int = _setting(25, "denoising steps (per clip)", low=1, high=200)
    sampler: str = _setting("ddim", ", ".join(SCHEDULERS))
    # Classifier-free guidance scales (generation.guidance.guidance_weights).
    text_scale: float = _setting(5.0, "guidance scale of the prompt", **GUIDANCE)
    identity_scale: float = _setting(2.0, "guidance scale of the identity (the references)", **GUIDANCE)
    audio_scale: float | None = _setting(
        None, "guidance scale of the audio, lip sync (default: the model's; the demo model's is 9)", **GUIDANCE,
        shown=3.5)
    # Strength of each added attention path inside AnimateNet (1 = as trained, 0 = off).
    identity_strength: float = _setting(1.0, "weight of the identity attention paths (1 = as trained)", **STRENGTH)
    audio_strength: float = _setting(1.0, "weight of the audio attention path (1 = as trained)", **STRENGTH)
    reference_strength: float = _setting(1.0, "weight of the reference bank in self-attention (1 = as trained)",
                                         **STRENGTH, flag="")
    motion_scale: float = _setting(1.0, "weight of the temporal modules (0 = frames independent)", **STRENGTH,
                                   flag="")
    structure_strength: float = _setting(1.0, "weight of the head placement and landmark guidance (1 = as trained)",
                                         **STRENGTH)
    fps: float | None = _setting(None, "frames per second (default: the model's)", low=1.0, high=120.0)
    # The aligned face crop is at least 64 px; above 2048 a frame's latents and the crop's warps need tens of GB.
    resolution: int | None = _setting(None, "square output side in pixels (default: the model's)", low=64,
                                      high=2048)
    # At most the motion modules' positional encoding (motion_max_seq_length, 32 in every preset).
    clip_frames: int | None = _setting(None, "frames denoised together (default: the model's)", low=1, high=32,
                                       flag="", unset=0)
    motion_frames: int | None = _setting(
        None, "frames of the previous clip each clip continues from (default: the model's)", low=0, high=31,
        flag="", unset=-1)
    seed: int = _setting(0, "same seed, same video", low=0, high=2**64 - 1)   # torch's and ComfyUI's seed range
    # Fraction of the noise schedule that runs. Below 1, every frame starts from the reference photo's latent noised
    # to that level (as ComfyUI's KSampler denoise and img2img do): the coarse layout, colours and identity come from
    # the photo, and the model redraws what changes (mouth, eyes, small motion).
    denoise: float = _setting(
        1.0, "share of the noise schedule run: 1 starts from noise; below 1 every frame starts from the photo "
             "noised to that level (keeps more of the photo)", low=0.01, high=1.0, step=0.01)
    # What is generated: "face", the whole frame; "mouth", only a box around the photo's mouth (jaw and lips), the
    # rest of every frame being the photo (latent inpainting, as in lip-sync models): steadier identity, no head
    # motion or blinks. None: the model's default (its config's ``region``).
    region: str | None = _setting(
        None, "face: generate whole frames; mouth: generate only the mouth area, the rest is the photo (default: "
              "the model's; the demo model's is mouth)", choices=REGIONS)
    # Region "mouth": outside the redrawn cells every frame is the photo's own pixels, not their VAE round trip, with
    # a feathered seam (as lip-sync tools paste the mouth back). False: the decoded frames as they are.
    paste_photo: bool = _setting(
        True, "region mouth: outside the mouth area, frames are the photo's own pixels (feathered seam); off keeps "
              "the decoded frames")
    # Redraw each photo outside its face (hair, clothes, background) from the prompt before animating it: the base
    # UNet inpaints around the face's latent cells, and the face's own pixels go back over the result with a
    # feathered seam (generation.restyle). The animation then keeps the new look, mouth mode included.
    restyle: bool = _setting(False, "redraw the photo outside the face (hair, clothes, background) from the prompt "
                                    "first")
    restyle_scale: float | None = _setting(None, "guidance scale of the restyle's prompt (default: the model's)",
                                           **GUIDANCE)
    # Without a driving video, the photo's head moves as the model predicts from the speech (models with a
    # head-motion module, such as the demo: models/head_pose.py). False, or a model without one: the head stays.
    head_motion_from_speech: bool = _setting(
        True, "without a driving video, the head moves as the model predicts from the speech (models trained with "
              "stage motion, such as the demo); off keeps it still", flag="--speech-head-motion")
    decode_chunk: int = _setting(8, "frames decoded by the VAE at once", low=1, high=1024, flag="")


def resolved(settings: GenerationSettings, config) -> GenerationSettings:
    """``settings`` with every None ("the model's") replaced by the model config's field of the same name."""
    own = {f.name: getattr(config, f.name) for f in fields(settings) if getattr(settings, f.name) is None}
    return replace(settings, **own)


def declared(name: str) -> Declared:
    return _fields()[name].metadata["declared"]


def default(name: str):
    return _fields()[name].default


def value_type(name: str) -> type:
    """int, float, str or bool: the setting's type, without the None that means "the model's"."""
    hint = typing.get_type_hints(GenerationSettings)[name]
    if isinstance(hint, types.UnionType):
        return next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def flag(name: str) -> str:
    """The command-line flag of a setting ("" if the command line does not offer it)."""
    own = declared(name).flag
    return "--" + name.replace("_", "-") if own is None else own


def shown_name(name: str) -> str:
    """What an error calls the setting: its flag, or where the command line has none, its Python name."""
    return flag(name) or name


def cli_settings() -> list[str]:
    """The settings the command line offers, in declaration order."""
    return [f.name for f in fields(GenerationSettings) if flag(f.name)]


def _fields() -> dict:
    return {f.name: f for f in fields(GenerationSettings)}
