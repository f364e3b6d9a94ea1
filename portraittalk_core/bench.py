"""``portraittalk bench``: speed and memory of the pipeline, against plain AnimateDiff in the same run.

For a chosen config (``tiny``, ``demo``: the embedded demo model's, or ``sd15``), resolution, frame count
and step count it reports time per denoising step, frames per second, time per stage (audio, face,
reference, denoise, decode, write), peak memory, and the same UNet run as diffusers'
``AnimateDiffPipeline`` (same sizes, no identity or audio, ordinary two-branch guidance), given as a
ratio. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .assets import default_reference, demo_face
from .audio import SAMPLE_RATE
from .checks import check_device, check_dtype, check_number, check_resolution, declared_range
from .config import preset
from .generation.guidance import guidance_weights
from .generation.settings import GenerationSettings
from .pipeline import PortraitTalkPipeline
from .schedulers import check_sampler, make_scheduler


class PeakMemory:
    """Peak memory above the starting point: CUDA allocator stats on a GPU, sampled RSS on the CPU."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak_bytes = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            start = torch.cuda.memory_allocated(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - start
            return
        _release_freed_memory()
        start = self._rss()
        peak = [start]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.002):
                peak[0] = max(peak[0], self._rss())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak_bytes = max(peak[0], self._rss()) - start


def _release_freed_memory() -> None:
    """Hand memory freed by earlier runs back to the OS (glibc keeps it otherwise), so that the RSS
    growth measured next is the run's own peak rather than hidden by cached pages."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure is then a lower bound
        pass


def speech_like(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A deterministic voiced signal with syllable-rate amplitude modulation (not silent, not speech)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    pitch = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / rate) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, np.pi))
    return (0.3 * voice * envelope / 2).astype(np.float32)


@dataclass
class BenchReport:
    config: str
    device: str
    dtype: str
    resolution: int
    frames: int
    steps: int
    branches: int
    seconds_per_step: float
    frames_per_second: float
    stages: dict[str, float]
    peak_memory_mb: float
    baseline_seconds_per_step: float | None = None
    baseline_peak_memory_mb: float | None = None
    ratio_step_time: float | None = None
    ratio_peak_memory: float | None = None
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [
            f"PortraitTalk bench: config={self.config} device={self.device} dtype={self.dtype} "
            f"resolution={self.resolution} frames={self.frames} steps={self.steps}",
            f"  denoise: {self.seconds_per_step:.3f} s/step ({self.branches} guidance branches x {self.frames} frames)",
            f"  throughput: {self.frames_per_second:.3f} frames/s end to end",
            "  stages (s): " + ", ".join(f"{k} {v:.3f}" for k, v in self.stages.items()),
            f"  peak memory: {self.peak_memory_mb:.0f} MB",
        ]
        if self.baseline_seconds_per_step is not None:
            lines += [
                f"  baseline AnimateDiffPipeline (2 branches, same UNet): {self.baseline_seconds_per_step:.3f} s/step, "
                f"peak {self.baseline_peak_memory_mb:.0f} MB",
                f"  ratio PortraitTalk / baseline: step time x{self.ratio_step_time:.2f}, "
                f"peak memory x{self.ratio_peak_memory:.2f}",
            ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def run_bench(config: str = "tiny", resolution: int | None = None, frames: int = 16, steps: int = 4,
              device: str = "cpu", dtype: torch.dtype = torch.float32, baseline: bool = True,
              sampler: str = "ddim") -> BenchReport:
    pipe = PortraitTalkPipeline.random(config, device=device, dtype=dtype)
    # The demo model runs on procedural faces like the shipped one (its face and mouth regions are found on it).
    reference = demo_face() if pipe.config.name == "demo" else default_reference()
    resolution = resolution or pipe.config.resolution
    fps = pipe.config.fps
    seconds = frames / fps - 0.5 / fps  # ceil(seconds * fps) == frames
    audio = (speech_like(seconds), SAMPLE_RATE)
    settings = GenerationSettings(prompt="a portrait photo of a person talking", steps=steps, sampler=sampler,
                                  resolution=resolution, clip_frames=frames, motion_frames=0)
    branches = len(guidance_weights(settings.text_scale, settings.identity_scale, pipe.config.audio_scale))
    memory = PeakMemory(device)
    with tempfile.TemporaryDirectory() as folder:
        # Warm-up: first calls load libraries, JIT-compile librosa and fill allocator caches; measuring
        # them would time the machine's start-up, not the pipeline.
        warm = dataclasses.replace(settings, steps=1)
        pipe([reference], audio, Path(folder) / "warmup.mp4", warm, progress=False)
        start = time.perf_counter()
        with memory.measure():
            result = pipe([reference], audio, Path(folder) / "bench.mp4", settings, progress=False)
        total = time.perf_counter() - start
    report = BenchReport(
        config=pipe.config.name, device=device, dtype=str(dtype).replace("torch.", ""), resolution=resolution,
        frames=result.frames, steps=steps, branches=branches,
        seconds_per_step=result.timings["denoise"] / steps, frames_per_second=result.frames / total,
        stages={k: round(v, 4) for k, v in result.timings.items()}, peak_memory_mb=memory.peak_bytes / 2**20,
    )
    if device == "cpu":
        report.notes.append("CPU peak memory: growth of the process's resident memory during the run, sampled "
                            "every 2 ms after a warm-up run; approximate")
    if baseline:
        base_step, base_peak = _animatediff_baseline(pipe, resolution, frames, steps, settings.prompt, sampler)
        report.baseline_seconds_per_step = base_step
        report.baseline_peak_memory_mb = base_peak / 2**20
        report.ratio_step_time = report.seconds_per_step / base_step
        report.ratio_peak_memory = (memory.peak_bytes / base_peak) if base_peak > 0 else float("nan")
    return report


def _animatediff_baseline(pipe: PortraitTalkPipeline, resolution: int, frames: int, steps: int, prompt: str,
                          sampler: str) -> tuple[float, int]:
    """The same UNetMotionModel, with diffusers' stock attention processors, in AnimateDiffPipeline."""
    from diffusers import AnimateDiffPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = pipe.model.animate_net.unet
    ours = dict(unet.attn_processors)
    unet.set_attn_processor(AttnProcessor2_0())
    try:
        baseline = AnimateDiffPipeline(vae=pipe.backbone.vae, text_encoder=pipe.backbone.text_encoder,
                                       tokenizer=pipe.backbone.tokenizer, unet=unet, motion_adapter=None,
                                       scheduler=make_scheduler(sampler, pipe.backbone.schedule))
        baseline.set_progress_bar_config(disable=True)
        memory = PeakMemory(pipe.device)
        timings: list[float] = []

        def on_step(p, i, t, kwargs):
            timings.append(time.perf_counter())
            return kwargs

        run = dict(prompt=prompt, num_frames=frames, height=resolution, width=resolution, guidance_scale=5.0,
                   output_type="latent", generator=torch.Generator("cpu").manual_seed(0))
        baseline(num_inference_steps=1, **run)  # warm-up, as for PortraitTalk
        with memory.measure():
            start = time.perf_counter()
            baseline(num_inference_steps=steps, callback_on_step_end=on_step, **run)
        # Call start to last step's end: includes encoding the prompt, a small share at these sizes.
        per_step = (timings[-1] - start) / steps if len(timings) == steps else float("nan")
        return per_step, memory.peak_bytes
    finally:
        unet.set_attn_processor(ours)


def run_from_args(args) -> int:
    """``portraittalk bench``: its arguments checked, the run, the report printed (and written as JSON)."""
    device = check_device(args.device)
    dtype = check_dtype(args.dtype, device)
    if args.resolution is not None:
        config = preset(args.config)
        check_resolution(args.resolution, config.vae_scale * 8, config.resolution, "--resolution")
    check_number("--frames", args.frames, 1, 64, integer=True, default=16)
    check_number("--steps", args.steps, *declared_range("steps"), integer=True, default=4)
    check_sampler(args.sampler)
    report = run_bench(args.config, args.resolution, args.frames, args.steps, str(device), dtype,
                       baseline=not args.no_baseline, sampler=args.sampler)
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2))
    return 0
