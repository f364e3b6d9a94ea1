"""Sampler choice by name, mapped onto diffusers schedulers over the backbone's noise schedule."""

from __future__ import annotations

from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, UniPCMultistepScheduler)

from .errors import InputError

SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                      "use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def check_sampler(name: str) -> None:
    """``name`` is one of ``SCHEDULERS``; else an InputError listing them."""
    if name not in SCHEDULERS:
        raise InputError(f"unknown sampler '{name}'", f"use one of: {', '.join(SCHEDULERS)}")


def make_scheduler(name: str, schedule: dict):
    check_sampler(name)
    cls, extra = SCHEDULERS[name]
    return cls.from_config({**schedule, **extra})
