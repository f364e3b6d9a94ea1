"""Wall-clock seconds per generation stage, for the timings a generation reports and the bench compares."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

class StageTimer:
    """Wall-clock seconds per pipeline stage (synchronising the GPU, so the numbers mean something)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed_iter(iterator, timer: StageTimer, stage: str):
    while True:
        with timer(stage):
            item = next(iterator, None)
        if item is None:
            return
        yield item

