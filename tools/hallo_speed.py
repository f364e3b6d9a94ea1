"""Hallo's pipeline and ours, timed on the same machine at the same sizes and steps in one run (issue 26, item 5).

What it measures, for one clip of F frames at R pixels with 2 motion frames:

- **time per denoising step**, as each pipeline runs its loop: one guided call of the denoiser on the [uncond; cond]
  batch, the guidance, one DDIM step. Theirs is Hallo's own ``FaceAnimatePipeline.__call__``
  (hallo/animate/face_animate.py:384-427) with the Net set up as scripts/inference.py:195-262 does (denoiser in
  training mode with gradient checkpointing, reference UNet in eval mode); ours is ``PortraitTalkModel`` at the
  ``hallo`` / ``hallo_tiny`` config, its reference pass, ``AnimateNet`` call and our DDIM over the config's schedule,
  as tests/test_hallo_host.py drives them. Both loops run the reference pass inside step 0, as theirs does; that step
  and any other warm-up step (``--warmup``) are left out. Figures: the median over the timed steps (``--steps``) of
  all ``--rounds``, the fastest step, the median CPU time of a step (all threads; steadier than wall time on a
  machine that other work shares), the median denoiser call alone, and the reference pass (wall and CPU).
- **memory**: resident memory of the process on the CPU (/proc/self/status; the high-water mark VmHWM is reset
  through /proc/self/clear_refs as the clip starts, so that the peak is the clip's own), the allocator's on CUDA
  (``torch.cuda.max_memory_allocated``). A side's figures: ``imports`` (after the imports, before any model: the
  libraries' own footprint), ``model`` (loaded, minus imports), ``resident`` (loaded, before the clip),
  ``loop_peak`` (the highest point from the clip's start to its last step, the model included: the goal's figure),
  ``loop_growth`` (the difference, what the clip itself needs) and ``process_peak`` (``ru_maxrss``: loading too).
- **a sanity check**: the max |difference| of the two sides' guided prediction at step 0, and of the latents after
  the last step, so that the two timed computations are known to be the same one.

How. Every side runs in a fresh process, one after the other, so that a peak is that process's own and only one
model is in memory at a time:

1. ``prepare`` (Hallo's Python): their Net built from their classes at the chosen size, weights drawn from a seeded
   generator (``hallo_reference._randomise``: their zero-initialised layers made non-zero) and rounded to float16
   values; saved as ``net.pth`` (a plain state dict, as their published file), with the clip's inputs (face embedding,
   face box, audio windows, the three region masks per level, the reference and motion latents) in
   ``inputs.safetensors``.
2. ``theirs`` (Hallo's Python): the Net built again and ``net.pth`` loaded strictly, as scripts/inference.py:244-250
   does; their pipeline runs warm-up plus timed steps of their 40-step schedule and is stopped from its callback. The
   VAE is a stand-in that returns the saved latents (the denoiser never sees pixels). It saves its initial noise,
   step 0's guided prediction and the last latents.
3. ``convert`` (our Python): ``portraittalk_core.convert.hallo.convert_hallo``, what ``portraittalk convert hallo``
   does: ``net.pth`` -> the denoiser's UNet in SD1.5 single-file names + the PortraitTalk file. Not timed.
4. ``ours`` (our Python): the UNet file through diffusers' LDM converter into a ``UNet2DConditionModel``, the
   PortraitTalk file through ``weights.load_model`` on that base (the diffusers host's way), then the same clip from
   the same noise.

With ``--rounds N`` steps 2 and 4 run N times, alternately, so that load from other work on the machine falls on
both sides alike. A kept ``--workdir`` is reused: steps 1 and 3 are skipped when it holds their files for the same
size, seed, resolution and frames (at sd15 size they take minutes and 9 GB of disk).

Sizes: ``tiny`` is the Net of tests/fixtures/hallo/tiny_net.json (2.1 M parameters; ``hallo_reference.CALLS_*``, our
``hallo_tiny``); ``sd15`` their full Net (2.42 B parameters; our ``hallo``). R must be a multiple of 64 (the latents
go down 3 levels and the audio blocks need square maps) and F + 2 at most 32 (the motion modules' position table).

Run it with OUR Python; HALLO_PATH names a checkout of fudan-generative-vision/hallo and HALLO_PYTHON a Python with
Hallo's pins (tools/hallo_reference.py's docstring says how to make one):

    HALLO_PATH=/work/hallo_checkout HALLO_PYTHON=/work/hallo_env/bin/python \\
        .venv/bin/python tools/hallo_speed.py --size tiny --resolution 64 --frames 4 --steps 3 --json speed.json

Measured figures and what they mean: docs/hallo_speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hallo_reference as ref  # tools/hallo_reference.py, beside this file (stdlib only at import)

MOTION_FRAMES = 2  # their n_motion_frames (configs/inference/default.yaml:7), our hallo configs' motion_frames
POSITION_TABLE = 32  # temporal_position_encoding_max_len (default.yaml:67): prefix + clip frames must fit
SCHEDULE_STEPS = 40  # their inference_steps (default.yaml:17): both sides step through this schedule
NOISE_SEED = ref.NOISE_SEED  # scripts/inference.py:289

# Their Net's parts at each size: the UNet config (SD 1.5's, which both their UNets are made from), the extra UNet
# kwargs on top of default.yaml's unet_additional_kwargs, and the small modules' constructor arguments
# (scripts/inference.py:206-220 at full size; tools/hallo_reference.py's CALLS_* at the tiny size).
THEIR_SIZES = {
    "tiny": {"unet": ref.CALLS_UNET, "unet_kwargs": ref.CALLS_UNET_KWARGS, "face_locator": ref.CALLS_FACE_LOCATOR,
             "image_proj": ref.CALLS_IMAGE_PROJ, "audio_proj": ref.CALLS_AUDIO_PROJ},
    "sd15": {"unet": ref.SD15_UNET, "unet_kwargs": {}, "face_locator": {"conditioning_embedding_channels": 320},
             "image_proj": {"cross_attention_dim": 768, "clip_embeddings_dim": 512, "clip_extra_context_tokens": 4},
             "audio_proj": {"seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": 512, "output_dim": 768,
                            "context_tokens": 32}},
}
OUR_CONFIGS = {"tiny": "hallo_tiny", "sd15": "hallo"}
DEFAULTS = {"tiny": {"resolution": 64, "frames": 4}, "sd15": {"resolution": 512, "frames": 16}}  # their inference's
SIDES = ("prepare", "theirs", "convert", "ours")


class SpeedError(Exception):
    """A problem the user can fix; printed as one line."""


# --- the command (our Python) ---------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(THEIR_SIZES), default="tiny",
                        help="tiny: the fixtures' Net (2.1 M parameters); sd15: their full Net (2.42 B)")
    parser.add_argument("--resolution", type=int, help="pixels, a multiple of 64 (default: tiny 64, sd15 512)")
    parser.add_argument("--frames", type=int, help="frames of the clip (default: tiny 4, sd15 16)")
    parser.add_argument("--steps", type=int, default=3, help="timed denoising steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="steps run first and not timed; step 0 holds the reference pass (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run their side and ours this many times each, alternately; the timed steps of all "
                             "rounds are pooled (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads in each process (default: the CPU count, %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="float16 on cuda only (their default run is fp16 on a GPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (%(default)s)")
    parser.add_argument("--json", help="also write the report to this JSON file")
    parser.add_argument("--workdir", help="keep net.pth, the converted files and each side's results in this folder, "
                                          "and reuse them in a later run of the same size, seed, resolution and "
                                          "frames (default: a temporary folder, removed)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # a child process: one side's work
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def check_args(args) -> None:
    """Refuse sizes their Net cannot run, before any process starts."""
    if args.resolution <= 0 or args.resolution % 64:
        raise SpeedError(f"--resolution {args.resolution} is not a positive multiple of 64 (the latents go down "
                         "3 levels and stay square): use e.g. 64, 256 or 512")
    if not 1 <= args.frames <= POSITION_TABLE - MOTION_FRAMES:
        raise SpeedError(f"--frames {args.frames} is out of range: the clip and its {MOTION_FRAMES} motion frames "
                         f"must fit the motion modules' position table of {POSITION_TABLE}; use 1 to "
                         f"{POSITION_TABLE - MOTION_FRAMES}")
    if args.steps < 1 or args.warmup < 1 or args.steps + args.warmup > SCHEDULE_STEPS:
        raise SpeedError(f"--warmup {args.warmup} --steps {args.steps}: need at least 1 of each (step 0 holds the "
                         f"reference pass) and at most {SCHEDULE_STEPS} in all (their schedule's steps)")
    if args.threads < 1 or args.rounds < 1:
        raise SpeedError(f"--threads {args.threads} --rounds {args.rounds}: use 1 or more of each")
    if args.dtype == "float16" and args.device == "cpu":
        raise SpeedError("--dtype float16 needs --device cuda (half precision on the CPU is not what either "
                         "pipeline runs)")


def hallo_environment() -> tuple[str, str]:
    """HALLO_PATH and HALLO_PYTHON, checked: one line naming the missing one and how to set it."""
    path, python = os.environ.get("HALLO_PATH"), os.environ.get("HALLO_PYTHON")
    if not path:
        raise SpeedError("HALLO_PATH is not set: point it at a checkout of fudan-generative-vision/hallo, e.g. "
                         "HALLO_PATH=~/hallo HALLO_PYTHON=/work/hallo_env/bin/python python tools/hallo_speed.py")
    if not (Path(path).expanduser() / "hallo" / "animate" / "face_animate.py").is_file():
        raise SpeedError(f"HALLO_PATH={path} is not a Hallo checkout (no hallo/animate/face_animate.py): point it "
                         "at the folder that holds hallo/ and scripts/")
    if not python:
        raise SpeedError("HALLO_PYTHON is not set: name a Python with Hallo's pins, e.g. "
                         "HALLO_PYTHON=/work/hallo_env/bin/python (tools/hallo_reference.py's docstring makes one)")
    if not os.access(python, os.X_OK):
        raise SpeedError(f"HALLO_PYTHON={python} is not an executable Python: name the reference environment's, "
                         "e.g. /work/hallo_env/bin/python")
    return path, python


def job_of(args) -> dict:
    return {"size": args.size, "resolution": args.resolution, "frames": args.frames, "motion_frames": MOTION_FRAMES,
            "warmup": args.warmup, "steps": args.steps, "threads": args.threads, "device": args.device,
            "dtype": args.dtype, "seed": args.seed, "rounds": args.rounds}


def run_side(side: str, python: str, work: Path) -> dict | None:
    """One side's work in a fresh process (its progress goes to stderr as it comes); what it measured, if anything."""
    print(f"hallo_speed.py: {side} ({python})", file=sys.stderr, flush=True)
    result = work / f"{side}.json"
    result.unlink(missing_ok=True)
    done = subprocess.run([python, str(Path(__file__).resolve()), "--side", side, "--workdir", str(work)],
                          check=False)
    if done.returncode:
        raise SpeedError(f"the '{side}' process failed (exit {done.returncode}); its messages are above")
    return json.loads(result.read_text()) if result.exists() else None


def run_all(job: dict, work: Path, hallo_python: str, rounds: int) -> dict:
    """prepare and convert once; then their run and ours, alternately, `rounds` times (load from other work on the
    machine then falls on both sides alike). Returns the report."""
    (work / "job.json").write_text(json.dumps(job, indent=1))
    load = [os.getloadavg()[0]]
    if run_once("prepare", hallo_python, work, job):
        (work / "convert.done.json").unlink(missing_ok=True)  # new weights: convert them again
    results = {"theirs": [], "ours": []}
    for i in range(rounds):
        results["theirs"].append(run_side("theirs", hallo_python, work))
        if i == 0:
            run_once("convert", sys.executable, work, job)
        results["ours"].append(run_side("ours", sys.executable, work))
    load.append(os.getloadavg()[0])
    sides = {side: combine(found, job["warmup"]) for side, found in results.items()}
    return build_report(job, sides["theirs"], sides["ours"], compare(work), load)


def run_once(side: str, python: str, work: Path, job: dict) -> bool:
    """prepare or convert, unless `work` (a kept --workdir) already holds its files for the same Net and inputs.
    True when it ran."""
    marker, key = work / f"{side}.done.json", {k: job[k] for k in ("size", "seed", "resolution", "frames")}
    if marker.exists() and json.loads(marker.read_text()) == key:
        print(f"hallo_speed.py: {side}: {work} holds its files for this size, seed and inputs; reused",
              file=sys.stderr, flush=True)
        return False
    marker.unlink(missing_ok=True)
    run_side(side, python, work)
    marker.write_text(json.dumps(key))
    return True


def combine(rounds: list[dict], warmup: int) -> dict:
    """One side's figures over its rounds: the timed steps of all rounds pooled (median, minimum, CPU-time median),
    the rest as medians over the rounds."""
    def pooled(key):
        return [v for r in rounds for v in r["timing"][key][warmup:]]

    def per_round(part, key):
        return statistics.median(r[part][key] for r in rounds)

    steps = pooled("steps_s")
    timing = {"step_median_s": statistics.median(steps), "step_min_s": min(steps),
              "step_cpu_median_s": statistics.median(pooled("steps_cpu_s")),
              "unet_median_s": statistics.median(pooled("unet_calls_s")),
              "reference_s": per_round("timing", "reference_s"),
              "reference_cpu_s": per_round("timing", "reference_cpu_s"), "load_s": per_round("timing", "load_s"),
              "rounds": [r["timing"] for r in rounds]}
    memory = {key: per_round("memory", key) for key in rounds[0]["memory"]}
    return {"timing": timing, "memory": memory, "versions": rounds[0]["versions"],
            "parameters": rounds[0]["parameters"]}


def compare(work: Path) -> dict:
    """The sanity check: both sides' guided prediction at step 0 and latents after the last step."""
    import torch  # deferred: the argument checks and errors above need no torch
    from safetensors.torch import load_file

    theirs, ours = load_file(str(work / "theirs.safetensors")), load_file(str(work / "ours.safetensors"))
    out = {}
    for key in ("guided_step0", "latents_last"):
        a, b = theirs[key].double(), ours[key].double()
        out[f"{key}_max_abs_diff"] = float((a - b).abs().max())
        out[f"{key}_max_abs"] = float(a.abs().max())
        out[f"{key}_finite"] = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
    return out


def ratio(ours, theirs):
    return None if ours is None or not theirs else ours / theirs


TIMING_RATIOS = {"step": "step_median_s", "step_min": "step_min_s", "step_cpu": "step_cpu_median_s",
                 "unet_call": "unet_median_s", "reference_pass": "reference_s",
                 "reference_pass_cpu": "reference_cpu_s"}
MEMORY_FIGURES = ("imports_mb", "model_mb", "resident_mb", "loop_peak_mb", "loop_growth_mb", "process_peak_mb")


def build_report(job: dict, theirs: dict, ours: dict, check: dict, load=(None, None)) -> dict:
    """The report: both sides' figures, ours / theirs for each, and the goal of issue 26 item 5."""
    ratios = {name: ratio(ours["timing"][key], theirs["timing"][key]) for name, key in TIMING_RATIOS.items()}
    ratios.update({f"memory_{k}": ratio(ours["memory"][k], theirs["memory"][k]) for k in MEMORY_FIGURES})
    goal = {"step_ratio_at_most_1": ratios["step"] <= 1.0,
            "loop_peak_ratio_at_most_1": ratios["memory_loop_peak_mb"] <= 1.0}
    return {"job": job, "machine": dict(machine(), load_average_1min=list(load)), "theirs": theirs, "ours": ours,
            "ratios": ratios, "check": check, "goal": goal}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cpu_count": os.cpu_count(), "platform": platform.platform()}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# (label, part, key, format, ratio) of each row of the table
ROWS = (("step, median (s)", "timing", "step_median_s", "{:.4f}", "step"),
        ("step, fastest (s)", "timing", "step_min_s", "{:.4f}", "step_min"),
        ("step, CPU time (s)", "timing", "step_cpu_median_s", "{:.4f}", "step_cpu"),
        ("denoiser call (s)", "timing", "unet_median_s", "{:.4f}", "unet_call"),
        ("reference pass (s)", "timing", "reference_s", "{:.4f}", "reference_pass"),
        ("reference pass, CPU (s)", "timing", "reference_cpu_s", "{:.4f}", "reference_pass_cpu"),
        ("imports (MB)", "memory", "imports_mb", "{:.0f}", "memory_imports_mb"),
        ("model (MB)", "memory", "model_mb", "{:.0f}", "memory_model_mb"),
        ("loaded, before clip (MB)", "memory", "resident_mb", "{:.0f}", "memory_resident_mb"),
        ("clip peak (MB)", "memory", "loop_peak_mb", "{:.0f}", "memory_loop_peak_mb"),
        ("clip growth (MB)", "memory", "loop_growth_mb", "{:.0f}", "memory_loop_growth_mb"),
        ("process peak (MB)", "memory", "process_peak_mb", "{:.0f}", "memory_process_peak_mb"))


def format_report(report: dict) -> str:
    job, t, o, r, c = report["job"], report["theirs"], report["ours"], report["ratios"], report["check"]
    memory = "GPU allocator" if job["device"] == "cuda" else "resident memory"
    lines = [
        f"Hallo vs PortraitTalk, size {job['size']}: {job['resolution']} px, {job['frames']} frames + "
        f"{job['motion_frames']} motion frames, {job['warmup']} warm-up + {job['steps']} timed steps x "
        f"{job['rounds']} round(s), {job['threads']} threads, {job['device']} {job['dtype']}",
        f"  machine: {report['machine']['cpu']} ({report['machine']['cpu_count']} CPUs), 1-min load "
        + " -> ".join("-" if v is None else f"{v:.2f}" for v in report["machine"]["load_average_1min"]),
        f"  {'':26s} {'theirs':>10s} {'ours':>10s} {'ours/th.':>8s}   (memory: {memory})",
    ]
    for label, part, key, fmt, name in ROWS:
        lines.append(f"  {label:26s} {fmt.format(t[part][key]):>10s} {fmt.format(o[part][key]):>10s} "
                     f"{_ratio_text(r[name]):>8s}")
    for side, found in (("theirs", t), ("ours", o)):
        steps = "; ".join(_times(x["steps_s"]) for x in found["timing"]["rounds"])
        lines.append(f"  steps (s), {side}: {steps}")
    lines += [
        f"  load (s): theirs {t['timing']['load_s']:.1f}, ours {o['timing']['load_s']:.1f}; parameters: theirs "
        f"{t['parameters']:,}, ours {o['parameters']:,}",
        f"  same computation: guided step 0 max |diff| {c['guided_step0_max_abs_diff']:.3g} (values up to "
        f"{c['guided_step0_max_abs']:.3g}), latents after step {job['warmup'] + job['steps'] - 1} "
        f"{c['latents_last_max_abs_diff']:.3g} (up to {c['latents_last_max_abs']:.3g})",
        f"  goal (issue 26): step ratio <= 1: {_yes(report['goal']['step_ratio_at_most_1'])}; clip peak ratio <= 1: "
        f"{_yes(report['goal']['loop_peak_ratio_at_most_1'])}",
    ]
    return "\n".join(lines)


def _ratio_text(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _times(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.side:
            return run_child(args.side, Path(args.workdir))
        check_args(args)
        _, hallo_python = hallo_environment()
        with tempfile.TemporaryDirectory(prefix="hallo_speed_") as scratch:
            work = Path(args.workdir or scratch)
            work.mkdir(parents=True, exist_ok=True)
            report = run_all(job_of(args), work, hallo_python, args.rounds)
    except (SpeedError, ref.ToolError) as error:
        print(f"hallo_speed.py: error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


# --- measuring, the same in both children ---------------------------------------------------------------------------
class Clock:
    """Named marks of wall time and of this process's CPU time (all threads), each taken after the device has
    finished its queued work. CPU time is the steadier figure on a machine shared with other work."""

    def __init__(self, device):
        self.device = device
        self.marks: dict[str, list[tuple[float, float]]] = {}

    def mark(self, name: str) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks.setdefault(name, []).append((time.perf_counter(), time.process_time()))

    def spans(self, start: str, end: str, clock: int) -> list[float]:
        return [e[clock] - s[clock] for s, e in zip(self.marks[start], self.marks[end])]

    def timing(self) -> dict:
        """Step i runs from the end of step i - 1 (step 0: from the start of the reference pass, which step 0 holds)
        to its own end. Lists over all steps, warm-up included; `combine` takes the medians."""
        ends = self.marks["step_end"]
        starts = self.marks["reference_start"][:1] + ends[:-1]
        return {"steps_s": [e[0] - s[0] for s, e in zip(starts, ends)],
                "steps_cpu_s": [e[1] - s[1] for s, e in zip(starts, ends)],
                "unet_calls_s": self.spans("unet_start", "unet_end", 0),
                "reference_s": self.spans("reference_start", "reference_end", 0)[0],
                "reference_cpu_s": self.spans("reference_start", "reference_end", 1)[0]}


class Memory:
    """This process's memory: `imports` (made just after the imports, before any model), then around the clip:
    Linux's resident high-water mark on the CPU (reset through /proc/self/clear_refs as the clip starts, so that the
    peak is the clip's own), the allocator's on CUDA."""

    def __init__(self, device):
        self.device = device
        self.imports = 0 if device.type == "cuda" else _status_kb("VmRSS") * 1024

    def start(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.process_peak = torch.cuda.max_memory_allocated(self.device)
            self.resident = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _malloc_trim()  # freed loading buffers back to the OS, so that `resident` is what the model holds
        self.process_peak = _status_kb("VmHWM") * 1024  # = ru_maxrss so far: the reset below resets that too
        self.resident = _status_kb("VmRSS") * 1024
        try:
            Path("/proc/self/clear_refs").write_text("5")  # high-water mark := current resident size
        except OSError as err:
            raise SpeedError(f"cannot reset the resident high-water mark ({err}); needs Linux 4.0 or later") from err

    def stop(self) -> dict:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kb("VmHWM") * 1024
        mb = 1 / 2 ** 20
        return {"imports_mb": self.imports * mb, "model_mb": (self.resident - self.imports) * mb,
                "resident_mb": self.resident * mb, "loop_peak_mb": peak * mb,
                "loop_growth_mb": (peak - self.resident) * mb, "process_peak_mb": max(self.process_peak, peak) * mb}


def _status_kb(field: str) -> int:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SpeedError(f"/proc/self/status has no {field}: the CPU memory figures need Linux")


def _malloc_trim() -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: `resident` may then include freed memory
        pass


def run_child(side: str, work: Path) -> int:
    job = json.loads((work / "job.json").read_text())
    import torch

    torch.set_num_threads(job["threads"])
    device, dtype = torch.device(job["device"]), getattr(torch, job["dtype"])
    started = time.perf_counter()
    {"prepare": prepare_theirs, "theirs": run_theirs, "convert": convert_ours, "ours": run_ours}[side](
        job, work, device, dtype, started)
    return 0


def _log(side: str, text: str) -> None:
    print(f"  {side}: {text}", file=sys.stderr, flush=True)


def _versions() -> dict:
    import diffusers
    import torch

    return {"torch": torch.__version__, "diffusers": diffusers.__version__}


# --- their side (HALLO_PYTHON) --------------------------------------------------------------------------------------
def _import_hallo():
    """Their scripts/inference.py as a module, its warnings quietened (the same as hallo_reference.py calls)."""
    import warnings

    inference, _ = ref.import_hallo(ref.hallo_checkout())
    import diffusers

    warnings.filterwarnings("ignore", message=".*use_reentrant.*")
    warnings.filterwarnings("ignore", message=".*requires_grad=True.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    diffusers.utils.logging.set_verbosity_error()
    return inference, ref._calls_config(ref.hallo_checkout())


def their_net(inference, config, size: str, state=None, seed: int = 0):
    """Their Net assembled and frozen as scripts/inference.py:195-242 does, at `size`. Weights: `state` (a net.pth
    state dict) loaded strictly (:244-250), or seeded random ones rounded to float16 values (so that net.pth can hold
    them as float16 and both sides compute with the same float32 numbers)."""
    import torch
    from omegaconf import OmegaConf

    parts = THEIR_SIZES[size]
    unet_kwargs = {**OmegaConf.to_container(config.unet_additional_kwargs), **parts["unet_kwargs"]}
    reference_unet = inference.UNet2DConditionModel.from_config(dict(parts["unet"]))
    denoising_unet = inference.UNet3DConditionModel.from_config(
        dict(parts["unet"], _class_name=inference.UNet3DConditionModel.__name__, **ref.UNET_3D_BLOCKS), **unet_kwargs)
    net = inference.Net(reference_unet, denoising_unet, inference.FaceLocator(**parts["face_locator"]),
                        inference.ImageProjModel(**parts["image_proj"]),
                        inference.AudioProjModel(**parts["audio_proj"]))
    if state is None:
        ref._randomise(net, ref._generator(seed, f"speed_{size}_net"))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(p.to(torch.float16).to(torch.float32))
    else:
        net.load_state_dict(state, strict=True)  # copies into the float32 parameters, as theirs does
    net.requires_grad_(False)
    reference_unet.enable_gradient_checkpointing()  # scripts/inference.py:233-234
    denoising_unet.enable_gradient_checkpointing()
    reference_unet.eval()  # from_pretrained's mode; the denoiser stays in from_config's training mode
    denoising_unet.train()
    return net


def their_inputs(size: str, job: dict, seed: int) -> dict:
    """What scripts/inference.py hands the pipeline for one clip (hallo_reference._calls_inputs at any size)."""
    g = ref._generator(seed, f"speed_{size}_inputs")
    parts, side, f, n = THEIR_SIZES[size], job["resolution"] // 8, job["frames"], job["motion_frames"]
    audio = parts["audio_proj"]
    inputs = {
        "face_emb": ref._randn(g, 1, parts["image_proj"]["clip_embeddings_dim"]),
        "face_region": ref._uniform(g, 1, 3, job["resolution"], job["resolution"]),
        "audio_windows": ref._randn(g, 1, f, audio["seq_len"], audio["blocks"], audio["channels"]),
        "vae_mean": 5.0 * ref._randn(g, 1 + n, 4, side, side),  # latent_dist.mean; * 0.18215 ~ unit spread
        "ref_pixels": 2.0 * ref._uniform(g, 1, 1 + n, 3, job["resolution"], job["resolution"]) - 1.0,
    }
    for name in ("full_mask", "face_mask", "lip_mask"):
        for level in range(4):
            inputs[f"{name}.{level}"] = ref._uniform(g, 1, (side >> level) ** 2).repeat(f, 1)
    return {k: v.contiguous() for k, v in inputs.items()}


def prepare_theirs(job, work, device, dtype, started) -> None:
    import torch
    from safetensors.torch import save_file

    inference, config = _import_hallo()
    if config.data.n_motion_frames != job["motion_frames"] or config.inference_steps != SCHEDULE_STEPS:
        raise SpeedError(f"their default.yaml has {config.data.n_motion_frames} motion frames and "
                         f"{config.inference_steps} steps; this tool assumes {job['motion_frames']} and "
                         f"{SCHEDULE_STEPS}")
    with torch.no_grad():
        net = their_net(inference, config, job["size"], seed=job["seed"])
    params = sum(p.numel() for p in net.parameters())
    _log("prepare", f"their Net built, {params:,} parameters ({time.perf_counter() - started:.0f} s)")
    torch.save(ref._net_state(net), work / "net.pth")
    del net
    save_file(their_inputs(job["size"], job, job["seed"]), str(work / "inputs.safetensors"))
    meta = {"guidance_scale": float(config.cfg_scale), "parameters": params,
            "motion_scale": [float(config.pose_weight), float(config.face_weight), float(config.lip_weight)]}
    (work / "inputs.json").write_text(json.dumps(meta))
    _log("prepare", f"wrote net.pth ({(work / 'net.pth').stat().st_size / 2 ** 20:,.0f} MB) and inputs "
                    f"({time.perf_counter() - started:.0f} s)")


class _Stop(Exception):
    """Raised from their pipeline's callback once the steps are done."""


def run_theirs(job, work, device, dtype, started) -> None:
    import functools

    import torch
    from safetensors.torch import load_file, save_file

    inference, config = _import_hallo()
    memory = Memory(device)
    meta = json.loads((work / "inputs.json").read_text())
    with torch.no_grad():
        state = torch.load(work / "net.pth", map_location="cpu", weights_only=True)
        net = their_net(inference, config, job["size"], state=state)
        del state
    scheduler, _ = ref._calls_scheduler(inference, config)  # scripts/inference.py:185-192
    inputs = {k: v.to(device, dtype) for k, v in load_file(str(work / "inputs.safetensors")).items()}
    pipeline = inference.FaceAnimatePipeline(vae=ref._stand_in_vae(inputs["vae_mean"]),
                                             reference_unet=net.reference_unet, denoising_unet=net.denoising_unet,
                                             face_locator=net.face_locator, scheduler=scheduler,
                                             image_proj=net.imageproj)
    pipeline.to(device=device, dtype=dtype)  # scripts/inference.py:262
    net.audioproj.to(device=device, dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - started
    _log("theirs", f"Net loaded ({load_s:.0f} s); running {job['warmup']} + {job['steps']} steps")

    clock, total, saved = Clock(device), job["warmup"] + job["steps"], {}
    for module, name in ((net.reference_unet, "reference"), (net.denoising_unet, "unet")):
        module.register_forward_pre_hook(lambda *a, name=name: clock.mark(f"{name}_start"))
        module.register_forward_hook(lambda *a, name=name: clock.mark(f"{name}_end"))
    step = scheduler.step

    @functools.wraps(step)  # keeps the signature their prepare_extra_step_kwargs inspects (face_animate.py:207-219)
    def recording_step(model_output, timestep, sample, *args, **kwargs):
        if not saved:
            saved.update(guided_step0=model_output.clone(), latents_start=sample.clone())
        return step(model_output, timestep, sample, *args, **kwargs)

    scheduler.step = recording_step

    def callback(i, t, latents):  # face_animate.py:423-427, after every step
        clock.mark("step_end")
        if len(clock.marks["step_end"]) == total:
            saved["latents_last"] = latents.clone()
            raise _Stop

    masks = {name: [inputs[f"{name}.{level}"] for level in range(4)] for name in ("full_mask", "face_mask", "lip_mask")}
    memory.start()
    try:
        with torch.no_grad():
            audio_tensor = net.audioproj(inputs["audio_windows"])  # scripts/inference.py:314-320, outside the pipeline
            pipeline(ref_image=inputs["ref_pixels"], audio_tensor=audio_tensor, face_emb=inputs["face_emb"],
                     face_mask=inputs["face_region"], pixel_values_full_mask=masks["full_mask"],
                     pixel_values_face_mask=masks["face_mask"], pixel_values_lip_mask=masks["lip_mask"],
                     width=job["resolution"], height=job["resolution"], video_length=job["frames"],
                     num_inference_steps=SCHEDULE_STEPS, guidance_scale=meta["guidance_scale"],
                     generator=torch.manual_seed(NOISE_SEED), motion_scale=meta["motion_scale"], callback=callback)
    except _Stop:
        pass
    else:
        raise SpeedError("their pipeline ran to its end: the callback never stopped it")
    result = {"memory": memory.stop(), "timing": dict(clock.timing(), load_s=load_s),
              "versions": _versions(), "parameters": meta["parameters"]}
    save_file({k: v.float().cpu().contiguous() for k, v in saved.items()}, str(work / "theirs.safetensors"))
    (work / "theirs.json").write_text(json.dumps(result))
    _log("theirs", f"steps (s): {_times(result['timing']['steps_s'])}")


# --- our side (this Python) -----------------------------------------------------------------------------------------
def convert_ours(job, work, device, dtype, started) -> None:
    """`portraittalk convert hallo` on the prepared net.pth (once, like a user's conversion; not measured)."""
    import diffusers

    from portraittalk_core import config as configs
    from portraittalk_core.convert.hallo import convert_hallo

    diffusers.utils.logging.set_verbosity_error()
    config = getattr(configs, OUR_CONFIGS[job["size"]])()
    convert_hallo(work / "net.pth", work / "ours", config, overwrite=True)
    _log("convert", f"wrote {work / 'ours'} ({time.perf_counter() - started:.0f} s)")


def our_model(work: Path, device, dtype):
    """The converted files loaded as the diffusers host does: the UNet file into a UNet2DConditionModel (diffusers'
    LDM converter), the PortraitTalk file onto it with weights.load_model."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file

    from portraittalk_core.convert.hallo import MODEL_FILE, UNET_FILE
    from portraittalk_core.weights import load_model, read_config

    config = read_config(work / "ours" / MODEL_FILE)
    base = UNet2DConditionModel(**config.unet)
    base.load_state_dict(convert_ldm_unet_checkpoint(load_file(str(work / "ours" / UNET_FILE)), dict(config.unet)))
    return load_model(work / "ours" / MODEL_FILE, base_unet=base, device=device, dtype=dtype)


def run_ours(job, work, device, dtype, started) -> None:
    import diffusers
    import torch
    from einops import rearrange, repeat
    from safetensors.torch import load_file, save_file

    from portraittalk_core.backbone import SD15_SCHEDULE
    from portraittalk_core.models.animate_net import split_reference_record
    from portraittalk_core.models.attention import AttentionContext
    from portraittalk_core.models.audio_block import REGIONS
    from portraittalk_core.schedulers import make_scheduler, model_schedule

    diffusers.utils.logging.set_verbosity_error()  # its note on casting UNetMotionModel with to()
    memory = Memory(device)
    meta = json.loads((work / "inputs.json").read_text())
    with torch.no_grad():
        model = our_model(work, device, dtype)
    inputs = {k: v.to(device, dtype) for k, v in load_file(str(work / "inputs.safetensors")).items()}
    theirs = load_file(str(work / "theirs.safetensors"))
    scale, frames, refs = meta["guidance_scale"], job["frames"], 1 + job["motion_frames"]
    load_s = time.perf_counter() - started
    _log("ours", f"model loaded ({load_s:.0f} s); running {job['warmup']} + {job['steps']} steps")

    clock, saved = Clock(device), {}
    memory.start()
    with torch.no_grad():
        # Once per clip, as their pipeline does before its loop (face_animate.py:291-379): [uncond; cond] rows.
        emb = inputs["face_emb"]
        face_tokens = model.identity_projection(torch.cat([torch.zeros_like(emb), emb])[:, None])
        audio = model.audio_projection(inputs["audio_windows"][0])[None]
        structure = repeat(model.animate_net.structure_encoder(inputs["face_region"]), "v c h w -> v c f h w", f=frames)
        structure = torch.cat([torch.zeros_like(structure), structure])
        masks = {r: [torch.cat([inputs[f"{r}_mask.{level}"]] * 2) for level in range(4)] for r in REGIONS}
        reference = repeat(inputs["vae_mean"] * 0.18215, "r c h w -> v r c h w", v=2)
        scheduler = make_scheduler("ddim", model_schedule(SD15_SCHEDULE, model.config))
        scheduler.set_timesteps(SCHEDULE_STEPS, device=device)  # as their pipeline does (face_animate.py:285)
        latents = theirs["latents_start"].to(device, dtype)
        for i, t in enumerate(scheduler.timesteps[:job["warmup"] + job["steps"]]):
            if i == 0:
                clock.mark("reference_start")
                _, record = model.identity_net(reference, face_tokens, None, None, 0)
                bank, prefix = split_reference_record(record, refs)
                context = AttentionContext(bank=bank, bank_scale=torch.tensor([0.0, 1.0], device=device),
                                           motion_prefix=prefix, region_masks=masks,
                                           audio_tokens=rearrange(torch.cat([torch.zeros_like(audio), audio]),
                                                                  "b f m d -> (b f) m d"),
                                           region_weights=tuple(meta["motion_scale"]))
                clock.mark("reference_end")
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            clock.mark("unet_start")
            noise = model.animate_net(model_input, t, face_tokens, context, structure_residual=structure)
            clock.mark("unet_end")
            guided = noise[:1] + scale * (noise[1:] - noise[:1])
            if i == 0:
                saved["guided_step0"] = guided.clone()
            latents = scheduler.step(guided, t, latents).prev_sample
            clock.mark("step_end")
    saved["latents_last"] = latents
    result = {"memory": memory.stop(), "timing": dict(clock.timing(), load_s=load_s),
              "versions": _versions(), "parameters": sum(p.numel() for p in model.parameters())}
    save_file({k: v.float().cpu().contiguous() for k, v in saved.items()}, str(work / "ours.safetensors"))
    (work / "ours.json").write_text(json.dumps(result))
    _log("ours", f"steps (s): {_times(result['timing']['steps_s'])}")


if __name__ == "__main__":
    sys.exit(main())
