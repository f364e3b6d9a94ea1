"""``portraittalk prepare``: talking-head videos -> one compact training shard per video (shards.py: what a
shard holds).

Each video's face track is aligned once, with a similarity transform from the median of the detected keypoints,
so head motion inside the clip is kept (the model learns it).

Videos from ``portraittalk synth`` carry exact landmarks in a sidecar ``.npz``; those are used instead of
detection. A bad video (no face, no audio, several speakers, corrupt) is skipped and reported, and never
stops the job. Finished shards are skipped, so an interrupted job resumes; ``workers`` runs in parallel.
"""

from __future__ import annotations

import json
import logging
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .. import audio as audio_io
from .. import face as face_io
from ..errors import FaceError, PortraitTalkError
from ..io.video import video_frames
from .landmarks68 import synthetic_detection
from .shards import write_shard

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm"}


@dataclass
class PrepareResult:
    prepared: list[str]
    skipped: dict[str, str]      # video -> reason
    existing: list[str]


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """All frames (F, H, W, 3) uint8 and the frame rate. Raises PortraitTalkError on a corrupt file."""
    try:
        with video_frames(path) as (decoded, fps):  # a file without a video stream: NoVideoStream, a PortraitTalkError
            frames = list(decoded)
    except av.error.FFmpegError as err:
        raise PortraitTalkError(f"{path.name} cannot be decoded ({err})", "re-encode it with ffmpeg") from err
    if not frames:
        raise PortraitTalkError(f"{path.name} has no frames", "give a video with frames")
    return np.stack(frames), fps


def sidecar_landmarks(path: Path):
    sidecar = path.with_suffix(".npz")
    if not sidecar.exists():
        return None
    with np.load(sidecar) as data:
        if "landmarks" not in data:
            return None
        return data["landmarks"].astype(np.float32)


def _caption(path: Path) -> str:
    meta = path.with_suffix(".json")
    if meta.exists():
        try:
            return str(json.loads(meta.read_text()).get("caption", ""))
        except json.JSONDecodeError:
            return ""
    return ""


def _detect_track(frames: np.ndarray, detector, every: int) -> tuple[list, np.ndarray]:
    """Detections on every ``every``-th frame; refuses clips where several people are clearly visible."""
    detections, sampled = [], range(0, len(frames), every)
    for index in sampled:
        found = detector.detect(frames[index])
        if len(found) > 1:
            areas = sorted(((d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]) for d in found), reverse=True)
            if areas[1] > 0.5 * areas[0]:
                raise FaceError("several speakers: more than one large face in the video",
                                "use single-speaker clips")
        if found:
            detections.append((index, max(found, key=lambda d: (d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]))))
    if len(detections) < max(1, len(sampled) // 2):
        raise FaceError("no face found in most of the video", "use clips where one face is visible throughout")
    return [d for _, d in detections], np.array([i for i, _ in detections])


def _interpolate_track(points: np.ndarray, at: np.ndarray, n_frames: int) -> np.ndarray:
    """(K, N, 2) landmarks at frames ``at`` -> (n_frames, N, 2), linear in time, held at the ends."""
    flat = points.reshape(len(at), -1)
    frames = np.arange(n_frames)
    return np.stack([np.interp(frames, at, flat[:, j]) for j in range(flat.shape[1])], axis=1).reshape(
        n_frames, *points.shape[1:]).astype(np.float32)


def prepare_video(path: Path, out_dir: Path, size: int, front_end, detector=None, face_fraction: float = 0.35,
                  detect_every: int = 5) -> Path:
    frames, fps = read_video(path)
    wave = audio_io.load_audio(path)
    audio_io.check_not_silent(wave)
    n_frames = min(len(frames), audio_io.frame_count(wave.duration, fps))
    frames = frames[:n_frames]

    exact = sidecar_landmarks(path)
    if exact is not None:  # synthetic clip: exact landmarks, no detection
        landmarks_src = exact[:n_frames]
        reference = synthetic_detection(landmarks_src)
        regions, embedding = reference.regions, None
    else:
        detector = detector or face_io.default_detector()
        track, sampled = _detect_track(frames, detector, detect_every)
        kps = np.median(np.stack([d.kps for d in track]), axis=0)
        reference = track[0]
        reference.kps = kps
        regions = reference.regions
        embedding = reference.embedding
        # Detecting on every frame is slow on a CPU: landmarks of the sampled frames, interpolated in time.
        landmarks_src = _interpolate_track(np.stack([d.landmarks for d in track]), sampled, n_frames)

    aligned = face_io.align_face(frames[0], reference, size, face_fraction)
    matrix = aligned.matrix
    import cv2
    crops = np.stack([cv2.warpAffine(f, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
                      for f in frames])
    landmarks = np.stack([lm @ matrix[:, :2].T + matrix[:, 2] for lm in landmarks_src]).astype(np.float32)
    head_mask = face_io.head_placement_mask(landmarks.reshape(-1, 2), size)
    features = front_end(wave)
    arrays = dict(frames=crops, landmarks=landmarks, head_masks=(head_mask > 0).astype(np.uint8),
                  audio=wave.samples.astype(np.float16), audio_features=features.numpy().astype(np.float16))
    if embedding is not None:
        arrays["embedding"] = np.asarray(embedding, np.float32)
    meta = dict(fps=fps, n_frames=int(n_frames), size=size, feature_rate=float(front_end.feature_rate),
                front_end=front_end.name, duration=wave.duration, caption=_caption(path), source=str(path),
                regions={k: np.asarray(v).tolist() for k, v in regions.items()},
                landmarks="exact" if exact is not None else f"detected every {detect_every} frames, interpolated")
    return write_shard(out_dir / f"{path.stem}.npz", meta, arrays)


def _worker(args) -> tuple[str, str | None]:
    path, out_dir, size, n_mels, face_fraction = args
    warnings.simplefilter("ignore")
    try:
        prepare_video(Path(path), Path(out_dir), size, audio_io.LogMelFrontEnd(n_mels=n_mels),
                      face_fraction=face_fraction)
        return path, None
    except PortraitTalkError as err:
        return path, str(err)
    except Exception as err:  # a bad video never stops a long job: report it and go on
        return path, f"unexpected {type(err).__name__}: {err} ({traceback.format_exc(limit=1).strip()})"


def prepare_folder(videos: Path, out_dir: Path, size: int = 64, n_mels: int = 80, face_fraction: float = 0.35,
                   workers: int = 1) -> PrepareResult:
    """Every video under ``videos`` (any layout: HDTF, MEAD, flat folders) -> ``out_dir/<name>.npz``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in Path(videos).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    existing = [str(p) for p in paths if (out_dir / f"{p.stem}.npz").exists()]
    todo = [(str(p), str(out_dir), size, n_mels, face_fraction) for p in paths
            if not (out_dir / f"{p.stem}.npz").exists()]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_worker, todo))
    else:
        results = [_worker(t) for t in todo]
    skipped = {path: reason for path, reason in results if reason}
    for path, reason in skipped.items():
        log.warning("skipped %s: %s", path, reason)
    prepared = [path for path, reason in results if not reason]
    (out_dir / "prepare_report.json").write_text(json.dumps(
        {"prepared": prepared, "skipped": skipped, "existing": existing}, indent=1))
    return PrepareResult(prepared, skipped, existing)
