"""The benchmark reports every figure it promises, with the AnimateDiff baseline from the same run."""

from __future__ import annotations

import json
import math

from portraittalk_core.bench import run_bench
from portraittalk_core.cli import main


def test_bench_reports_stages_memory_and_baseline_ratio():
    report = run_bench("tiny", resolution=64, frames=4, steps=2)
    assert set(report.stages) == {"audio", "face", "reference", "denoise", "decode", "write"}
    assert all(v >= 0 for v in report.stages.values())
    assert report.frames == 4 and report.branches == 4
    assert report.seconds_per_step > 0 and report.frames_per_second > 0
    assert report.baseline_seconds_per_step > 0
    assert math.isclose(report.ratio_step_time, report.seconds_per_step / report.baseline_seconds_per_step)
    assert "baseline AnimateDiffPipeline" in report.text()


def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--frames", "3", "--steps", "1", "--no-baseline", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["frames"] == 3 and data["baseline_seconds_per_step"] is None
    assert "s/step" in capsys.readouterr().out
