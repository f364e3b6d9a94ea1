"""A whole dataset: which clips to make (``plan_dataset``), making one (``generate_clip``), and making
all of them into a folder (``synth_dataset``, the ``portraittalk synth`` command).

Layout of a dataset folder::

    <out>/manifest.json                 settings, splits and the list of clips
    <out>/<split>/<clip_id>.mp4         H.264 video with the AAC speech
    <out>/<split>/<clip_id>.npz         per-frame landmarks (F,68,2), kps (F,5,2), aperture, width,
                                        eye_open (F,), pose (F,3)
    <out>/<split>/<clip_id>.json        caption, identity, sentence, voice, settings

Splits hold out people *and* words: the validation and test clips use identities and sentences
that no training clip uses, so an evaluation measures generalisation to new faces saying new
things, not memory.

Everything is a pure function of the seed and the settings: the same command gives the same npz
arrays and the same decoded video frames, on any machine with the same libraries, with any
number of workers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..audio import frame_count
from ..data.landmarks68 import kps_from_68
from ..errors import InputError, PortraitTalkError
from ..io.video import VideoWriter

from .identity import caption, identity_from_seed
from .motion import blinks, head_motion, mouth_width, speech_curves
from .render import render_frame
from .speech import SENTENCES, VOICES, speak, voice_slug

SPLITS = ("train", "val", "test")
MANIFEST_VERSION = 1
RATE_RANGE = (140, 185)  # words per minute: calm to brisk
PITCH_RANGE = (35, 65)  # espeak-ng pitch, 50 = the voice's own


@dataclass
class ClipSpec:
    """One clip to make: who speaks which sentence, with which voice, for which split."""

    identity_seed: int
    sentence_index: int
    voice: str
    rate: int
    pitch: int
    split: str


def clip_id(spec: ClipSpec) -> str:
    """'<identity id>_<sentence index>_<voice slug>', e.g. '3f2a9c01bd_007_en-gb-f2'."""
    return f"{identity_from_seed(spec.identity_seed).id}_{spec.sentence_index:03d}_{voice_slug(spec.voice)}"


# ---- planning ------------------------------------------------------------------------------------


def sentence_splits(test_fraction: float = 0.1, val_fraction: float = 0.1) -> dict[str, list[int]]:
    """Sentence indices per split: the last ``test_fraction`` of SENTENCES are test-only, the
    ``val_fraction`` before them validation-only, the rest training. The split is by position,
    so SENTENCES must not change during a dataset's lifetime."""
    n = len(SENTENCES)
    n_test, n_val = _held_out(n, test_fraction), _held_out(n, val_fraction)
    return {"train": list(range(0, n - n_test - n_val)),
            "val": list(range(n - n_test - n_val, n - n_test)),
            "test": list(range(n - n_test, n))}


def identity_seeds(seed: int, n_identities: int) -> list[int]:
    """The identity seeds of a dataset: a hash of (seed, k), so datasets with different seeds
    share no people, and a larger dataset with the same seed contains the smaller one's."""
    return [_hash31(f"identity:{seed}:{k}") for k in range(n_identities)]


def identity_splits(seeds: list[int], test_fraction: float = 0.1, val_fraction: float = 0.1) -> dict[int, str]:
    """Split of each identity seed. Identities are ranked by a hash of their seed; the first
    ``round(n * test_fraction)`` go to test, the next ``round(n * val_fraction)`` to validation,
    the rest to training. Ranking rather than thresholding the hash guarantees each held-out split
    at least one identity (once there are 3 or more), which a small demo dataset needs."""
    ranked = sorted(seeds, key=lambda s: _hash31(f"split:{s}"))
    n = len(ranked)
    n_test, n_val = _held_out(n, test_fraction), _held_out(n, val_fraction)
    split = {s: "train" for s in ranked}
    split.update({s: "test" for s in ranked[:n_test]})
    split.update({s: "val" for s in ranked[n_test:n_test + n_val]})
    return split


def plan_dataset(seed: int, n_identities: int, clips_per_identity: int, test_fraction: float = 0.1,
                 val_fraction: float = 0.1) -> list[ClipSpec]:
    """Every clip of the dataset, in a fixed order (by identity, then clip).

    Each identity speaks ``clips_per_identity`` sentences drawn from its split's sentences
    (shuffled, cycling when it needs more than there are), each with a voice not yet used for that
    sentence by that identity and a random rate and pitch.
    """
    _check_plan_args(n_identities, clips_per_identity, test_fraction, val_fraction)
    sentences = sentence_splits(test_fraction, val_fraction)
    seeds = identity_seeds(seed, n_identities)
    splits = identity_splits(seeds, test_fraction, val_fraction)
    specs = []
    for identity_seed in seeds:
        split = splits[identity_seed]
        pool = sentences[split]
        if clips_per_identity > len(pool) * len(VOICES):
            raise InputError(
                f"{clips_per_identity} clips per identity is more than the {split} split's "
                f"{len(pool)} sentences x {len(VOICES)} voices can make without repeats",
                f"use at most {len(pool) * len(VOICES)} clips per identity",
            )
        rng = np.random.default_rng([identity_seed, 1])  # stream 1: the plan (0 is the identity)
        used: set[tuple[int, str]] = set()
        order: list[int] = []
        for k in range(clips_per_identity):
            if k % len(pool) == 0:
                order = [int(i) for i in rng.permutation(pool)]
            sentence = order[k % len(pool)]
            voices = [v for v in VOICES if (sentence, v) not in used]
            voice = voices[int(rng.integers(len(voices)))]
            used.add((sentence, voice))
            rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
            pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
            specs.append(ClipSpec(identity_seed, sentence, voice, rate, pitch, split))
    return specs


def _held_out(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 3:
        return 0
    return max(1, int(round(n * fraction)))


def _hash31(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _check_plan_args(n_identities, clips_per_identity, test_fraction, val_fraction) -> None:
    for name, value in (("identities", n_identities), ("clips per identity", clips_per_identity)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"the number of {name} must be a positive integer, got {value!r}",
                             "pass e.g. --identities 50 --clips-per-identity 8")
    if not (0 <= test_fraction < 0.5 and 0 <= val_fraction < 0.5 and test_fraction + val_fraction < 0.8):
        raise InputError(f"test_fraction={test_fraction} and val_fraction={val_fraction} do not leave a "
                         "training split", "use fractions from 0 to 0.4, e.g. 0.1 each")


# ---- one clip ------------------------------------------------------------------------------------


def generate_clip(spec: ClipSpec, out_dir, size: int = 128, fps: float = 25.0) -> Path:
    """Speak, animate, render and save one clip; returns the mp4's path.

    The motion rng is seeded from the whole spec, so the clip does not depend on which other
    clips are made, in which order, or by which worker.
    """
    out_dir = Path(out_dir)
    identity = identity_from_seed(spec.identity_seed)
    name = clip_id(spec)
    text = SENTENCES[spec.sentence_index]

    wave = speak(text, spec.voice, spec.rate, spec.pitch)
    n_frames = frame_count(wave.duration, fps)
    aperture, brightness = speech_curves(wave, fps, n_frames)
    width = mouth_width(aperture, brightness)
    rng = np.random.default_rng([spec.identity_seed, spec.sentence_index,
                                 zlib.crc32(spec.voice.encode()), spec.rate, spec.pitch])
    eye_open = blinks(rng, n_frames, fps)
    pose = head_motion(rng, n_frames, fps, activity=aperture, brightness=brightness)

    landmarks = np.zeros((n_frames, 68, 2), np.float32)
    video = out_dir / f"{name}.mp4"
    with VideoWriter(video, fps, audio=wave) as writer:
        for i in range(n_frames):
            image, landmarks[i] = render_frame(identity, size, aperture[i], width[i], eye_open[i], pose[i])
            writer.write(image)

    arrays = dict(landmarks=landmarks, kps=np.stack([kps_from_68(lm) for lm in landmarks]),
                  aperture=aperture, width=width, eye_open=eye_open, pose=pose)
    _write_atomic(out_dir / f"{name}.npz", lambda f: np.savez_compressed(f, **arrays))
    meta = {
        "clip_id": name, "split": spec.split, "caption": caption(identity),
        "identity": asdict(identity), "identity_seed": spec.identity_seed,
        "sentence_index": spec.sentence_index, "sentence": text,
        "voice": spec.voice, "rate": spec.rate, "pitch": spec.pitch,
        "fps": float(fps), "size": int(size), "n_frames": n_frames, "duration": wave.duration,
    }
    # The json is written last: its presence marks the clip as complete (see _clip_done).
    _write_atomic(out_dir / f"{name}.json",
                  lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    return video


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file beside ``path`` and rename it into place, so an interrupted
    run never leaves a truncated file that a resumed run would take as done."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _clip_paths(out: Path, spec: ClipSpec) -> dict[str, Path]:
    name = clip_id(spec)
    folder = out / spec.split
    return {"video": folder / f"{name}.mp4", "arrays": folder / f"{name}.npz", "meta": folder / f"{name}.json"}


def _clip_done(paths: dict[str, Path], size: int, fps: float) -> bool:
    """All three files exist and were made with these settings."""
    if not all(p.is_file() for p in paths.values()):
        return False
    try:
        meta = json.loads(paths["meta"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("size") == int(size) and meta.get("fps") == float(fps)


# ---- the whole dataset -----------------------------------------------------------------------------


def synth_dataset(out, n_identities: int, clips_per_identity: int, size: int = 128, fps: float = 25.0,
                  seed: int = 0, workers: int = 1, test_fraction: float = 0.1, val_fraction: float = 0.1,
                  progress=None, splits: tuple[str, ...] = SPLITS) -> dict:
    """Make the dataset in ``out`` (see the module docstring) and return its manifest.

    Resumable: clips whose three files exist (made with the same size and fps) are kept. With
    ``workers > 1`` clips are made in a pool of spawned processes; the output is the same.
    ``progress(done, total, clip_id)`` is called after each clip, if given. ``splits`` makes only those
    splits' clips (``portraittalk eval`` needs val and test, not train); they are the same clips as in
    the whole dataset.
    """
    out = Path(out).expanduser()
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise InputError(f"size must be an integer of at least 16 pixels, got {size!r}", "use e.g. --size 128")
    if not (isinstance(fps, (int, float)) and 1 <= fps <= 120):
        raise InputError(f"fps must be between 1 and 120, got {fps!r}", "use e.g. --fps 25")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}", "use e.g. --workers 4")
    specs = [spec for spec in plan_dataset(seed, n_identities, clips_per_identity, test_fraction, val_fraction)
             if spec.split in splits]
    paths = [_clip_paths(out, spec) for spec in specs]
    todo = [spec for spec, p in zip(specs, paths) if not _clip_done(p, size, fps)]
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)

    done, total = len(specs) - len(todo), len(specs)
    jobs = [(spec, str(out / spec.split), size, float(fps)) for spec in todo]
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")  # safe with threads (torch, cv2) in the parent
        with context.Pool(min(workers, len(jobs)), initializer=_worker_init) as pool:
            for name in pool.imap_unordered(_generate_job, jobs):
                done += 1
                if progress:
                    progress(done, total, name)
    else:
        for job in jobs:
            name = _generate_job(job)
            done += 1
            if progress:
                progress(done, total, name)

    manifest = _manifest(out, specs, paths, dict(
        n_identities=n_identities, clips_per_identity=clips_per_identity, size=size, fps=float(fps),
        seed=seed, test_fraction=test_fraction, val_fraction=val_fraction))
    _write_atomic(out / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode("utf-8")))
    return manifest


def _worker_init() -> None:
    # One process per core already; library thread pools on top would only oversubscribe.
    import cv2

    cv2.setNumThreads(1)


def _generate_job(job) -> str:
    spec, out_dir, size, fps = job
    return generate_clip(spec, out_dir, size, fps).stem


def _manifest(out: Path, specs: list[ClipSpec], paths: list[dict], settings: dict) -> dict:
    clips = []
    for spec, p in zip(specs, paths):
        meta = json.loads(p["meta"].read_text(encoding="utf-8"))
        clips.append({
            "clip_id": meta["clip_id"], "split": spec.split,
            **{key: path.relative_to(out).as_posix() for key, path in p.items()},
            "identity_id": meta["identity"]["id"], "identity_seed": spec.identity_seed,
            "sentence_index": spec.sentence_index, "voice": spec.voice, "rate": spec.rate,
            "pitch": spec.pitch, "n_frames": meta["n_frames"], "caption": meta["caption"],
        })
    sentences = sentence_splits(settings["test_fraction"], settings["val_fraction"])
    identities = {split: sorted({c["identity_id"] for c in clips if c["split"] == split}) for split in SPLITS}
    return {
        "version": MANIFEST_VERSION,
        "settings": settings,
        "splits": {split: {"identities": identities[split], "sentences": sentences[split],
                           "clips": sum(c["split"] == split for c in clips)} for split in SPLITS},
        "clips": clips,
    }


# ---- command line ------------------------------------------------------------------------------------


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``synth`` options, for this module's parser and for the main CLI's subcommand."""
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (created; resumed if it exists)")
    parser.add_argument("--identities", type=int, default=50, help="number of synthetic people")
    parser.add_argument("--clips-per-identity", type=int, default=8, help="sentences spoken by each person")
    parser.add_argument("--size", type=int, default=128, help="square frame side in pixels")
    parser.add_argument("--fps", type=float, default=25.0, help="frames per second")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed: same seed, same dataset")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="identities and sentences held out for test")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="identities and sentences held out for validation")
    return parser


def run_synth(args: argparse.Namespace) -> int:
    """Run ``portraittalk synth`` from parsed arguments; PortraitTalkError propagates."""

    def report(done: int, total: int, name: str) -> None:
        print(f"[{done}/{total}] {name}", file=sys.stderr, flush=True)

    manifest = synth_dataset(args.out, args.identities, args.clips_per_identity, args.size, args.fps,
                             args.seed, args.workers, args.test_fraction, args.val_fraction, progress=report)
    counts = ", ".join(f"{s} {v['clips']} clips / {len(v['identities'])} identities"
                       for s, v in manifest["splits"].items())
    print(f"wrote {args.out / 'manifest.json'}: {counts}")
    return 0


def main_synth(argv=None) -> int:
    """``portraittalk synth --out DIR --identities N --clips-per-identity K --size 128 --fps 25
    --seed 0 --workers 1``: returns the exit code (2 with a one-line message for a user error)."""
    parser = add_synth_arguments(argparse.ArgumentParser(
        prog="portraittalk synth", description="Generate a procedural talking-face dataset."))
    args = parser.parse_args(argv)
    try:
        return run_synth(args)
    except KeyboardInterrupt:
        print("cancelled: finished clips are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except PortraitTalkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main_synth())
