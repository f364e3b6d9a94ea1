"""``portraittalk eval``'s settings, and the generation settings they give every generated clip (``_sampling``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalSettings:
    weights: str | None = None      # None: the embedded demo model
    data: str | None = None         # a synth dataset folder (val/, test/); None: made in out/synth
    out: str = "runs/eval"
    # The defaults measure the demo model in about 15 minutes on 2 CPU cores.
    clips: int = 12                 # test clips generated (the demo recipe's test split has 36, 6 identities)
    prompt_clips: int = 12          # test clips generated again with a recoloured background prompt
    seconds: float | None = 3.0     # evaluate the first seconds of each clip (None: all of it)
    prompt_seconds: float = 1.0     # audio used for the prompt test
    steps: int = 10
    sampler: str = "ddim"
    denoise: float = 1.0
    region: str | None = None       # None: the model's default
    paste_photo: bool = True        # region mouth: the photo's own pixels outside the mouth (GenerationSettings)
    # The lip sync and identity clips follow the ground truth's head motion (head_motion.py, from its exact brow and
    # nose landmarks: the mouth and jaw stay the audio's to move), as a driving video would give it.
    head_motion: bool = False
    # Otherwise the head moves as the model predicts from the speech (models with a head-motion module, such as the
    # demo: models/head_pose.py); False keeps the photo's head still.
    head_motion_from_speech: bool = True
    restyle_scale: float | None = None  # the prompt test's restyle guidance; None: the model's default
    prompt_palette: bool = True     # the prompt clips' photos also restyled with every other background colour
    seed: int = 0
    split: str = "test"             # "val" to tune generation settings without touching the test split
    text_scale: float = 5.0
    identity_scale: float = 2.0
    audio_scale: float | None = None  # None: the model's default
    regressor_steps: int = 1500
    workers: int = 1


def _sampling(settings: EvalSettings) -> dict:
    return dict(steps=settings.steps, sampler=settings.sampler, denoise=settings.denoise, region=settings.region,
                paste_photo=settings.paste_photo, seed=settings.seed,
                head_motion_from_speech=settings.head_motion_from_speech, text_scale=settings.text_scale,
                identity_scale=settings.identity_scale, audio_scale=settings.audio_scale)
