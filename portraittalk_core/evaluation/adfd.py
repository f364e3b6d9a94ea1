"""ADFD, Audio-Driven Facial Dynamics: does the face move with the speech, and only the mouth?

The paper names the metric but not its formula; this is ours (SPEC section 5). From per-frame landmarks
aligned to the face (F, N, 2), their regions, the speech and the frame rate:

(a) temporal: normalised cross-correlation of the mouth-opening velocity with the change of the audio
    envelope, maximised over lags of up to +-2 frames, clipped to [0, 1]. A mouth that opens and closes
    when the sound rises and falls scores near 1; a mouth on another schedule near 0.
(b) spatial: mouth open in speech, closed in silence. Against ground truth (its mouth opening per frame)
    it is the Pearson correlation of the two openings; otherwise the difference of the mean opening in
    voiced and unvoiced frames (voice activity from the envelope), in units of the opening's standard
    deviation, halved and clipped to [0, 1].
(c) stability: jitter of the rigid non-mouth landmarks (the nose's: they move with the head only, never
    with speech, blinks or brows, so a face that blinks or drops its jaw is not called unstable), J = RMS
    distance of each point from its 5-frame moving average, divided by the inter-ocular distance;
    stability = exp(-J / 0.01).
(d) activity: does the mouth move as much as speech makes it: the standard deviation of the opening over
    that of the ground truth's (or, without one, over 0.05 inter-ocular distances, a talking mouth's
    typical variation), clipped to [0, 1].

    ADFD = stability * (1 + 0.4 temporal + 0.3 spatial + 0.3 activity) / 2        in [0, 1]

Stability gates the score (a shaking face is not a good talking face, however well the lips move); a
still face keeps half of it, a mouth that talks out of sync a little more. On one clip this ranks: in sync > shifted by 0.5 s > still face > jittered
face (tests/test_evaluation.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-8
# A mouth opening (inter-ocular units) that varies less than this is not moving. A network reading the same frame
# many times in one batch may differ in the last bits from row to row (seen: 3e-8 with two threads, 0 with one),
# and those bits would otherwise correlate with the speech by chance.
STILL = 1e-6
MAX_LAG = 2
JITTER_SCALE = 0.01
TALKING_OPENING_STD = 0.05


@dataclass
class ADFD:
    score: float
    temporal: float
    spatial: float
    stability: float
    activity: float


def envelope(samples: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """RMS of the speech over each video frame's span, log-compressed: (n_frames,)."""
    hop = sample_rate / fps
    out = np.zeros(n_frames)
    for i in range(n_frames):
        chunk = samples[int(round(i * hop)):int(round((i + 1) * hop))]
        out[i] = np.sqrt(np.mean(chunk.astype(np.float64) ** 2)) if len(chunk) else 0.0
    return np.log1p(out / (np.percentile(out, 95) + EPS) * 10)


def face_scale(landmarks: np.ndarray, regions: dict) -> float:
    """Inter-ocular distance (median over frames): the unit landmark distances are measured in."""
    eyes = landmarks[:, np.asarray(regions["eyes"])]
    half = eyes.shape[1] // 2
    distance = np.linalg.norm(eyes[:, :half].mean(1) - eyes[:, half:].mean(1), axis=-1)
    return float(np.median(distance)) + EPS


def mouth_opening(landmarks: np.ndarray, regions: dict) -> np.ndarray:
    """Vertical extent of the mouth points over the face scale, per frame: (F,)."""
    mouth = np.asarray(landmarks, np.float64)[:, np.asarray(regions["mouth"])]
    return (mouth[..., 1].max(1) - mouth[..., 1].min(1)) / face_scale(landmarks, regions)


def held_still(opening: np.ndarray) -> np.ndarray:
    """The opening as it is, or its mean on every frame when it varies by less than ``STILL`` (rounding)."""
    return np.full_like(opening, opening.mean()) if opening.std() < STILL else opening


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > EPS else 0.0


def temporal_score(opening: np.ndarray, env: np.ndarray) -> float:
    velocity, change = np.diff(opening), np.diff(env)
    best = 0.0
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        a = velocity[max(0, lag):len(velocity) + min(0, lag)]
        b = change[max(0, -lag):len(change) + min(0, -lag)]
        best = max(best, _ncc(a, b))
    return float(np.clip(best, 0.0, 1.0))


def spatial_score(opening: np.ndarray, env: np.ndarray, ground_truth: np.ndarray | None = None) -> float:
    if ground_truth is not None:
        return float(np.clip(_ncc(opening, ground_truth), 0.0, 1.0))
    voiced = env > 0.5 * env.max()
    if voiced.all() or not voiced.any() or opening.std() < STILL:
        return 0.0
    separation = (opening[voiced].mean() - opening[~voiced].mean()) / (opening.std() + EPS)
    return float(np.clip(separation / 2, 0.0, 1.0))


def stability_score(landmarks: np.ndarray, regions: dict) -> float:
    points = landmarks[:, np.asarray(regions["nose"])]
    kernel = np.ones(5) / 5
    padded = np.pad(points, ((2, 2), (0, 0), (0, 0)), mode="edge")
    smooth = np.apply_along_axis(lambda x: np.convolve(x, kernel, mode="valid"), 0, padded)
    jitter = np.sqrt(np.mean(np.sum((points - smooth) ** 2, axis=-1))) / face_scale(landmarks, regions)
    return float(np.exp(-jitter / JITTER_SCALE))


def activity_score(opening: np.ndarray, ground_truth: np.ndarray | None = None) -> float:
    reference = ground_truth.std() if ground_truth is not None else TALKING_OPENING_STD
    return float(np.clip(opening.std() / (reference + EPS), 0.0, 1.0))


def adfd(landmarks: np.ndarray, regions: dict, samples: np.ndarray, sample_rate: int, fps: float,
         ground_truth_opening: np.ndarray | None = None) -> ADFD:
    """ADFD of one clip; see the module text for the formula."""
    env = envelope(samples, sample_rate, fps, len(landmarks))
    opening = held_still(mouth_opening(landmarks, regions))
    temporal = temporal_score(opening, env)
    spatial = spatial_score(opening, env, ground_truth_opening)
    stability = stability_score(landmarks, regions)
    activity = activity_score(opening, ground_truth_opening)
    score = stability * (1 + 0.4 * temporal + 0.3 * spatial + 0.3 * activity) / 2
    return ADFD(score, temporal, spatial, stability, activity)


def ordering_variants(landmarks: np.ndarray, regions: dict, fps: float, seed: int = 0) -> dict[str, np.ndarray]:
    """The four faces SPEC section 5 ranks, from one clip's landmarks (F, N, 2): in sync (as given), the
    mouth shifted by 0.5 s, a still face (the first frame held), and the clip with every point jittered by
    5% of the inter-ocular distance."""
    mouth = np.asarray(regions["mouth"])
    shifted = landmarks.copy()
    shifted[:, mouth] = np.roll(landmarks[:, mouth], int(round(0.5 * fps)), axis=0)
    noise = np.random.default_rng(seed).normal(0, 0.05 * face_scale(landmarks, regions), landmarks.shape)
    return {"in_sync": landmarks, "shifted_0.5s": shifted, "still": np.repeat(landmarks[:1], len(landmarks), 0),
            "jittered": landmarks + noise}


def ordering_test(landmarks: np.ndarray, regions: dict, samples: np.ndarray, sample_rate: int, fps: float,
                  seed: int = 0) -> tuple[dict[str, float], bool]:
    """ADFD of each ``ordering_variants`` face and whether they rank in sync > shifted > still > jittered."""
    scores = {name: adfd(points, regions, samples, sample_rate, fps).score
              for name, points in ordering_variants(landmarks, regions, fps, seed).items()}
    values = list(scores.values())
    return scores, all(a > b for a, b in zip(values, values[1:]))
