"""tools/hallo_speed.py (issue 26, item 5): its argument checks, its environment errors and its report. No timing is
ever asserted. The end-to-end run needs Hallo's code and its Python: it is skipped unless HALLO_PATH and HALLO_PYTHON
are set (see the tool's docstring)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "hallo_speed.py"
sys.path.insert(0, str(TOOL.parent))
import hallo_speed  # noqa: E402  (tools/ is not a package)

HALLO_PATH, HALLO_PYTHON = os.environ.get("HALLO_PATH"), os.environ.get("HALLO_PYTHON")


def run_tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("HALLO_PATH", "HALLO_PYTHON")}
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False,
                          env={**base, **(env or {})}, cwd=ROOT)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hallo_speed.py: error: "), done.stderr
    return lines[0]


def test_missing_hallo_path_is_named_with_a_fix():
    line = one_error_line(run_tool("--size", "tiny"))
    assert "HALLO_PATH is not set" in line and "HALLO_PATH=" in line


def test_missing_hallo_python_is_named_with_a_fix(tmp_path):
    checkout = tmp_path / "hallo"
    (checkout / "hallo" / "animate").mkdir(parents=True)
    (checkout / "hallo" / "animate" / "face_animate.py").write_text("")
    line = one_error_line(run_tool(env={"HALLO_PATH": str(checkout)}))
    assert "HALLO_PYTHON is not set" in line and "HALLO_PYTHON=" in line
    line = one_error_line(run_tool(env={"HALLO_PATH": str(checkout), "HALLO_PYTHON": str(tmp_path / "none")}))
    assert "is not an executable Python" in line


def test_a_folder_that_is_not_hallo_is_refused(tmp_path):
    line = one_error_line(run_tool(env={"HALLO_PATH": str(tmp_path), "HALLO_PYTHON": sys.executable}))
    assert "is not a Hallo checkout" in line


@pytest.mark.parametrize("args, says", [
    (["--resolution", "100"], "--resolution 100"),
    (["--frames", "31"], "--frames 31"),
    (["--steps", "40"], "--steps 40"),
    (["--warmup", "0"], "--warmup 0"),
    (["--dtype", "float16"], "needs --device cuda"),
    (["--rounds", "0"], "--rounds 0"),
])
def test_sizes_their_net_cannot_run_are_refused_before_anything_starts(args, says):
    assert says in one_error_line(run_tool(*args))


def test_defaults_follow_the_size():
    tiny, full = hallo_speed.parse_args([]), hallo_speed.parse_args(["--size", "sd15"])
    assert (tiny.resolution, tiny.frames) == (64, 4)
    assert (full.resolution, full.frames) == (512, 16)  # their inference's (configs/inference/default.yaml)
    assert hallo_speed.parse_args(["--size", "sd15", "--resolution", "256"]).resolution == 256


def side(step: float, peak: float) -> dict:
    """One side's combined figures, made up (the report only divides them)."""
    timing = {"steps_s": [2 * step, step], "steps_cpu_s": [2 * step, step], "unet_calls_s": [step, step],
              "reference_s": step / 2, "reference_cpu_s": step / 2, "load_s": 1.0}
    memory = {k: peak for k in hallo_speed.MEMORY_FIGURES}
    return hallo_speed.combine([{"timing": timing, "memory": memory, "versions": {}, "parameters": 10}], warmup=1)


def test_report_gives_ours_over_theirs_and_the_goal():
    job = vars(hallo_speed.parse_args(["--steps", "1"]))
    job["motion_frames"] = hallo_speed.MOTION_FRAMES
    check = {"guided_step0_max_abs_diff": 1e-4, "guided_step0_max_abs": 5.0, "latents_last_max_abs_diff": 1e-5,
             "latents_last_max_abs": 3.0}
    report = hallo_speed.build_report(job, side(0.2, 1000.0), side(0.1, 1500.0), check, (0.5, 0.7))
    assert report["ratios"]["step"] == pytest.approx(0.5)
    assert report["ratios"]["memory_loop_peak_mb"] == pytest.approx(1.5)
    assert report["goal"] == {"step_ratio_at_most_1": True, "loop_peak_ratio_at_most_1": False}
    json.dumps(report)  # --json writes it as it is
    text = hallo_speed.format_report(report)
    assert "0.500" in text and "1.500" in text
    assert "step ratio <= 1: yes" in text and "clip peak ratio <= 1: NO" in text


@pytest.mark.skipif(not (HALLO_PATH and HALLO_PYTHON),
                    reason="set HALLO_PATH (a Hallo checkout) and HALLO_PYTHON (a Python with its pins) to run it")
def test_tiny_run_times_the_same_computation(tmp_path):
    """Both pipelines at the tiny size, one timed step: the report is complete and the two sides computed the same
    guided prediction (within the guided-call bound of tests/test_hallo_host.py, 6e-4, plus the float16 bank's
    rounding, measured there at up to 4e-4)."""
    out = tmp_path / "speed.json"
    done = run_tool("--size", "tiny", "--steps", "1", "--threads", "1", "--json", str(out),
                    env={"HALLO_PATH": HALLO_PATH, "HALLO_PYTHON": HALLO_PYTHON})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["ratios"]) >= {"step", "unet_call", "memory_loop_peak_mb", "memory_process_peak_mb"}
    for found in (report["theirs"], report["ours"]):
        assert len(found["timing"]["rounds"][0]["steps_s"]) == 2
        assert found["parameters"] > 0
    assert report["check"]["guided_step0_finite"] and report["check"]["latents_last_finite"]
    assert report["check"]["guided_step0_max_abs_diff"] < 1e-3
    assert "ours/th." in done.stdout
