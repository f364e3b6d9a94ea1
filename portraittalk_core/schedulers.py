"""Sampler choice by name, mapped onto diffusers schedulers over the model's noise schedule."""

from __future__ import annotations

from .config import PortraitTalkConfig
from .errors import InputError

# name -> (diffusers scheduler class, its options). Names only here: the settings that list them are read by the
# command line's --help, which should not wait for diffusers to import.
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def check_sampler(name: str) -> None:
    """``name`` is one of ``SCHEDULERS``; else an InputError listing them."""
    if name not in SCHEDULERS:
        raise InputError(f"unknown sampler '{name}'", f"use one of: {', '.join(SCHEDULERS)}")


def model_schedule(backbone_schedule: dict, config: PortraitTalkConfig) -> dict:
    """The noise schedule a model samples with: the backbone's, with the model config's ``schedule`` keys over it.
    A model whose UNet was trained on another schedule than its backbone's (Hallo's: v-prediction, zero terminal
    SNR, trailing spacing) says so in its config; the default, no keys, is the backbone's schedule unchanged."""
    return {**backbone_schedule, **config.schedule}


def make_scheduler(name: str, schedule: dict):
    import diffusers  # deferred: a heavy import, needed only once a model runs

    check_sampler(name)
    cls, extra = SCHEDULERS[name]
    return getattr(diffusers, cls).from_config({**schedule, **extra})
