"""Shared fixtures: the tiny model on CPU, the shipped reference photo and speech."""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")       # mediapipe's C++ logs
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import torch

from portraittalk_core.assets import default_reference, default_speech

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def reference_path():
    return default_reference()


@pytest.fixture(scope="session")
def speech_path():
    return default_speech()


def tone(seconds: float, rate: int = 16_000, freq: float = 220.0) -> np.ndarray:
    """A voiced, amplitude-modulated tone: not silent, deterministic."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_pipe():
    from portraittalk_core.pipeline import PortraitTalkPipeline

    return PortraitTalkPipeline.random("tiny", seed=0)
