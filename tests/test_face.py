"""Tests for portraittalk_core.face.

The real-photo tests use scikit-image's astronaut (Eileen Collins, one frontal face, bbox about
x 174..277, y 68..172) and run the mediapipe detector; they are skipped when either is missing.
insightface is never needed: its loader is tested against a stand-in FaceAnalysis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe is imported anywhere

import cv2
import numpy as np
import pytest
from PIL import Image

from portraittalk_core import face as F
from portraittalk_core.assets import default_reference
from portraittalk_core.face import detector_choice
from portraittalk_core.face.landmarks import LAYOUT_468
from portraittalk_core.errors import FaceError, InputError, PortraitTalkWarning, WeightsError

ASTRONAUT_BOX = np.array([174, 68, 277, 172], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("mediapipe")
    with F.MediaPipeDetector() as det:
        yield det


@pytest.fixture(scope="module")
def astronaut_face(astronaut, detector) -> F.FaceDetection:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    return faces[0]


def eye_angle_degrees(kps: np.ndarray) -> float:
    dx, dy = kps[1] - kps[0]
    return float(np.degrees(np.arctan2(dy, dx)))


def fake_detection(kps, landmarks=None, box=None) -> F.FaceDetection:
    kps = np.asarray(kps, dtype=np.float32)
    if landmarks is None:
        landmarks = kps
    lo, hi = kps.min(0), kps.max(0)
    return F.FaceDetection(
        bbox=np.array(box if box is not None else [*lo, *hi], dtype=np.float32),
        score=0.9,
        kps=kps,
        landmarks=np.asarray(landmarks, dtype=np.float32),
        regions={name: np.arange(len(landmarks)) for name in F.LANDMARK_REGIONS},
        embedding=None,
    )


# --------------------------------------------------------------------------------------------
# Detection and alignment on a real photo
# --------------------------------------------------------------------------------------------


def test_detects_the_astronaut(astronaut_face):
    face = astronaut_face
    np.testing.assert_allclose(face.bbox, ASTRONAUT_BOX, atol=12)
    x0, y0, x1, y1 = face.bbox
    assert face.kps.shape == (5, 2)
    assert ((face.kps[:, 0] > x0) & (face.kps[:, 0] < x1)).all()
    assert ((face.kps[:, 1] > y0) & (face.kps[:, 1] < y1)).all()
    # Image-left eye first, mouth below nose below eyes.
    assert face.kps[0, 0] < face.kps[1, 0] and face.kps[3, 0] < face.kps[4, 0]
    assert face.kps[:2, 1].max() < face.kps[2, 1] < face.kps[3:, 1].min() + 5
    assert face.landmarks.shape == (468, 2)
    assert set(face.regions) == set(F.LANDMARK_REGIONS)
    assert face.embedding is None
    assert 0.5 < face.score <= 1.0


def test_alignment_puts_eyes_on_the_template(astronaut, astronaut_face):
    aligned = F.align_face(astronaut, astronaut_face, size=512)
    assert aligned.image.shape == (512, 512, 3) and aligned.image.dtype == np.uint8
    assert aligned.matrix.shape == (2, 3)
    template = F.template_kps(512)
    # A broad smile pulls the fit a little; the eyes still land within a few pixels.
    assert np.abs(aligned.kps[:2] - template[:2]).max() < 6
    assert abs(eye_angle_degrees(aligned.kps)) < 1
    # Landmarks went through the same matrix as the keypoints.
    moved = astronaut_face.landmarks @ aligned.matrix[:, :2].T + aligned.matrix[:, 2]
    np.testing.assert_allclose(aligned.landmarks, moved, atol=1e-2)
    # The crop shows the face where the keypoints say: the eyes are darker than the cheeks.
    grey = aligned.image.mean(2)
    eye_x, eye_y = np.round(aligned.kps[0]).astype(int)
    assert grey[eye_y - 3:eye_y + 4, eye_x - 3:eye_x + 4].mean() < grey[eye_y + 45, eye_x]


def test_head_mask_covers_the_face_but_not_everything(astronaut, astronaut_face):
    aligned = F.align_face(astronaut, astronaut_face)
    mask = aligned.head_mask
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    inside = np.round(aligned.landmarks).astype(int)
    inside = inside[((inside >= 0) & (inside < 512)).all(1)]
    assert mask[inside[:, 1], inside[:, 0]].all()
    assert 0.2 < mask.mean() < 0.95
    assert mask[0, 0] == 0 and mask[511, 0] == 0


def test_landmark_map_channels(astronaut, astronaut_face):
    aligned = F.align_face(astronaut, astronaut_face)
    lmap = aligned.landmark_map
    assert lmap.shape == (3, 512, 512) and lmap.dtype == np.float32
    assert 0 <= lmap.min() and lmap.max() <= 1
    for channel in lmap:
        assert (channel > 0.5).sum() > 200
    no_mouth = F.rasterize_landmarks(
        aligned.landmarks, aligned.regions, 512, include=("outline", "brows", "eyes", "nose")
    )
    assert not no_mouth[2].any()
    np.testing.assert_array_equal(no_mouth[:2], lmap[:2])
    # The mouth channel is drawn around the aligned mouth corners.
    ys, xs = np.nonzero(lmap[2] > 0.5)
    assert xs.min() < aligned.kps[3, 0] + 5 and xs.max() > aligned.kps[4, 0] - 5


def test_two_faces_warns_and_takes_the_larger(astronaut, detector):
    half = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    half = np.pad(half, ((128, 128), (0, 0), (0, 0)), mode="edge")
    both = np.concatenate([astronaut, half], axis=1)
    faces = F.detect_faces(both, detector)
    assert len(faces) == 2
    with pytest.warns(PortraitTalkWarning, match="2 faces found in group photo") as caught:
        chosen = F.select_face(faces, "group photo")
    np.testing.assert_allclose(chosen.bbox, ASTRONAUT_BOX, atol=12)
    # One line that names the photo, the face used and how to choose another.
    message = str(caught[0].message)
    assert "\n" not in message and "animating the largest one" in message and "crop the photo" in message


# Detection on a real photo must be a function of the photo: ComfyUI caches on it and artists re-run a graph
# expecting the same frames. Each run gets its own process, with the heap's fresh memory filled with a different
# byte (glibc's MALLOC_PERTURB_), so a result that depended on uninitialised memory, threads or process state would
# differ.
_DETECT_SCRIPT = """
import sys, numpy as np
from portraittalk_core import face as F
image = F.to_rgb_uint8(sys.argv[1])
with F.MediaPipeDetector() as det:
    first, again = det.detect(image), det.detect(image)
    aligned = F.prepare_references([image], size=128, detector=det)[0]
with F.MediaPipeDetector() as other:
    second = other.detect(image)
np.savez(sys.argv[2], bbox=first[0].bbox, kps=first[0].kps, landmarks=first[0].landmarks, score=first[0].score,
         again=again[0].landmarks, other=second[0].landmarks, image=aligned.image, aligned=aligned.landmarks)
"""


def test_detection_on_a_real_photo_is_the_same_in_every_process(tmp_path):
    pytest.importorskip("mediapipe")
    runs = []
    for fill in ("165", "37"):
        out = tmp_path / f"run{fill}.npz"
        env = dict(os.environ, MALLOC_PERTURB_=fill, GLOG_minloglevel="2")
        subprocess.run([sys.executable, "-c", _DETECT_SCRIPT, str(default_reference()), str(out)], env=env,
                       check=True, capture_output=True, timeout=300)
        runs.append(dict(np.load(out)))
    first, second = runs
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    # Two calls, and two detectors in one process, agree to the bit as well.
    np.testing.assert_array_equal(first["landmarks"], first["again"])
    np.testing.assert_array_equal(first["landmarks"], first["other"])


def test_prepare_references_twice_gives_the_same_faces(detector):
    first, second = (F.prepare_references([default_reference()], size=64, detector=detector, face_fraction=0.35)[0]
                     for _ in range(2))
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.landmarks, second.landmarks)
    np.testing.assert_array_equal(first.landmark_map, second.landmark_map)


@pytest.mark.parametrize("kind", ["grey", "coffee"])
def test_no_face_is_a_face_error_with_a_fix(kind, detector):
    if kind == "grey":
        image = np.full((256, 256, 3), 128, dtype=np.uint8)
    else:
        image = pytest.importorskip("skimage.data").coffee()
    with pytest.raises(FaceError) as err:
        F.prepare_references([image], detector=detector)
    assert "No face found in reference 1" in str(err.value)
    assert "Fix:" in str(err.value)


def _as_mode(rgb: np.ndarray, mode: str):
    pil = Image.fromarray(rgb)
    if mode == "I;16":
        grey = np.asarray(pil.convert("L")).astype(np.uint16) * 257
        return Image.fromarray(grey)
    return pil.convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_pil_modes_are_detected(mode, astronaut, detector):
    image = _as_mode(astronaut, mode)
    assert image.mode == mode
    rgb = F.to_rgb_uint8(image)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    if mode in ("L", "I;16"):
        expected = np.asarray(Image.fromarray(astronaut).convert("L"))
        assert np.abs(rgb[:, :, 0].astype(int) - expected).max() <= 1
        assert (rgb[:, :, 0] == rgb[:, :, 2]).all()
    faces = detector.detect(rgb)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].bbox, ASTRONAUT_BOX, atol=15)


@pytest.mark.parametrize("kind", ["float", "hwc1", "torch"])
def test_arrays_and_tensors_are_detected(kind, astronaut, detector):
    if kind == "float":
        image = astronaut.astype(np.float32) / 255
    elif kind == "hwc1":
        image = np.asarray(Image.fromarray(astronaut).convert("L"))[:, :, None]
    else:
        torch = pytest.importorskip("torch")
        image = torch.from_numpy(astronaut.astype(np.float32) / 255)
    rgb = F.to_rgb_uint8(image)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    if kind != "hwc1":
        assert np.abs(rgb.astype(int) - astronaut).max() <= 1
    assert len(detector.detect(rgb)) == 1


def test_huge_image_is_detected_in_original_coordinates(astronaut, detector):
    huge = cv2.resize(astronaut, (5000, 5000), interpolation=cv2.INTER_LINEAR)
    faces = F.detect_faces(huge, detector)
    assert len(faces) == 1
    scale = 5000 / 512
    np.testing.assert_allclose(faces[0].bbox, ASTRONAUT_BOX * scale, atol=15 * scale)
    [aligned] = F.prepare_references([huge], detector=detector)
    assert np.abs(aligned.kps[:2] - F.template_kps(512)[:2]).max() < 6
    # Same crop as from the original photo (the pre-shrink keeps the geometry).
    [small] = F.prepare_references([astronaut], detector=detector)
    diff = np.abs(aligned.image.astype(int) - small.image.astype(int)).mean()
    assert diff < 12


def test_rotated_photo_is_levelled(astronaut, detector):
    h, w = astronaut.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)
    rotated = cv2.warpAffine(astronaut, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    [aligned] = F.prepare_references([rotated], detector=detector)
    assert abs(eye_angle_degrees(aligned.kps)) < 2


def test_prepare_references_labels_and_indices(astronaut, detector, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(astronaut).save(path)
    faces = F.prepare_references([astronaut, path], size=256, detector=detector)
    assert [f.source_index for f in faces] == [0, 1]
    assert faces[1].image.shape == (256, 256, 3)
    np.testing.assert_array_equal(faces[0].image, faces[1].image)
    # A single image and a ComfyUI-style batch are taken as one and two references.
    assert len(F.prepare_references(path, detector=detector)) == 1
    batch = np.stack([astronaut, astronaut]).astype(np.float32) / 255
    assert [f.source_index for f in F.prepare_references(batch, detector=detector)] == [0, 1]
    Image.fromarray(np.full((128, 128, 3), 100, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(FaceError, match=r"reference 2 \(blank.png\)"):
        F.prepare_references([astronaut, tmp_path / "blank.png"], detector=detector)
    with pytest.raises(InputError, match="reference 2: Image is too small"):
        F.prepare_references([astronaut, np.zeros((20, 20, 3), np.uint8)], detector=detector)


def test_detector_rejects_non_rgb_input_and_use_after_close(detector):
    with pytest.raises(InputError, match="to_rgb_uint8"):
        detector.detect(np.zeros((100, 100), np.uint8))
    closed = F.MediaPipeDetector()
    closed.close()
    with pytest.raises(InputError, match="closed"):
        closed.detect(np.zeros((100, 100, 3), np.uint8))


def test_mediapipe_layout_matches_mediapipe_connection_sets():
    pytest.importorskip("mediapipe")
    from mediapipe.python.solutions import face_mesh_connections as c

    expected = {
        "outline": c.FACEMESH_FACE_OVAL,
        "brows": c.FACEMESH_LEFT_EYEBROW | c.FACEMESH_RIGHT_EYEBROW,
        "eyes": c.FACEMESH_LEFT_EYE | c.FACEMESH_RIGHT_EYE,
        "nose": c.FACEMESH_NOSE,
        "mouth": c.FACEMESH_LIPS,
    }
    for name, edges in expected.items():
        drawn = {frozenset(pair) for line in LAYOUT_468[name] for pair in zip(line, line[1:])}
        assert drawn == {frozenset(e) for e in edges}, name


# --------------------------------------------------------------------------------------------
# Loading images: no detector needed
# --------------------------------------------------------------------------------------------


def test_importing_face_needs_neither_detector_package():
    code = (
        "import sys; import portraittalk_core.face; "
        "assert 'mediapipe' not in sys.modules and 'insightface' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)


def test_tiny_empty_and_nan_images_are_input_errors():
    with pytest.raises(InputError, match="too small.*Fix: use a photo at least 256 px"):
        F.to_rgb_uint8(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InputError, match="empty"):
        F.to_rgb_uint8(np.zeros((0, 300, 3), np.uint8))
    nan = np.zeros((100, 100, 3), np.float32)
    nan[5, 5, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        F.to_rgb_uint8(nan)
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        F.to_rgb_uint8(np.full((100, 100, 3), 200.0, np.float32))
    with pytest.raises(InputError, match="channels-first"):
        F.to_rgb_uint8(np.zeros((3, 100, 100), np.uint8))
    with pytest.raises(InputError, match="type list"):
        F.to_rgb_uint8([[1, 2], [3, 4]])


def test_corrupt_and_missing_files_name_the_path(tmp_path):
    corrupt = tmp_path / "x.png"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(InputError, match="x.png") as err:
        F.to_rgb_uint8(corrupt)
    assert "Fix:" in str(err.value) and str(corrupt) in str(err.value)
    missing = tmp_path / "nowhere" / "face.jpg"
    with pytest.raises(InputError) as err:
        F.to_rgb_uint8(str(missing))
    assert str(missing) in str(err.value) and "not found" in str(err.value)


def test_alpha_is_composited_over_white_and_dtypes_scale():
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[:, :40] = [255, 0, 0, 255]  # opaque red
    rgba[:, 40:] = [0, 0, 0, 0]  # fully transparent black
    rgb = F.to_rgb_uint8(rgba)
    assert (rgb[:, :40] == [255, 0, 0]).all() and (rgb[:, 40:] == 255).all()
    la = Image.fromarray(rgba).convert("LA")
    assert F.to_rgb_uint8(la)[0, 79].tolist() == [255, 255, 255]
    assert F.to_rgb_uint8(np.full((80, 80), 65535, np.uint16)).min() == 255
    assert F.to_rgb_uint8(np.ones((80, 80), bool)).min() == 255
    assert F.to_rgb_uint8(Image.new("1", (80, 80), 1)).min() == 255
    f_mode = Image.fromarray(np.full((80, 80), 128, np.uint8)).convert("F")
    assert F.to_rgb_uint8(f_mode)[0, 0].tolist() == [128, 128, 128]
    i_mode = Image.fromarray(np.full((80, 80), 128, np.uint8)).convert("I")
    assert F.to_rgb_uint8(i_mode)[0, 0].tolist() == [128, 128, 128]


def test_exif_orientation_is_applied(tmp_path):
    wide = np.zeros((100, 200, 3), np.uint8)
    wide[:, :100] = 255  # white left half
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(wide).save(path, exif=exif)
    rgb = F.to_rgb_uint8(path)
    assert rgb.shape == (200, 100, 3)
    assert rgb[:100].mean() > 200 and rgb[100:].mean() < 50  # the white half is now on top


# --------------------------------------------------------------------------------------------
# Geometry without a detector
# --------------------------------------------------------------------------------------------


def test_align_recovers_a_known_similarity():
    template = F.template_kps(512).astype(np.float64)
    turn = cv2.getRotationMatrix2D((300.0, 200.0), 30, 0.5)  # template -> photo
    kps = template @ turn[:, :2].T + turn[:, 2]
    image = np.zeros((600, 700, 3), np.uint8)
    aligned = F.align_face(image, fake_detection(kps))
    np.testing.assert_allclose(aligned.kps, template, atol=1e-3)
    assert aligned.head_mask.any() and aligned.landmark_map.any()


def test_align_rejects_bad_input():
    kps = F.template_kps(512)
    with pytest.raises(InputError, match="to_rgb_uint8"):
        F.align_face(np.zeros((512, 512), np.float32), fake_detection(kps))
    with pytest.raises(FaceError):
        F.align_face(np.zeros((512, 512, 3), np.uint8), fake_detection(np.ones((5, 2)) * 10))


def test_select_face_without_faces_and_with_several():
    with pytest.raises(FaceError, match="No face found in my photo") as err:
        F.select_face([], "my photo")
    assert "Fix: use a photo where one face is clearly visible" in str(err.value)
    kps = F.template_kps(512)
    small = fake_detection(kps, box=[0, 0, 10, 10])
    large = fake_detection(kps, box=[0, 0, 50, 40])
    with pytest.warns(PortraitTalkWarning, match="3 faces found in pic.*largest"):
        assert F.select_face([small, large, small], "pic") is large
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F.select_face([small], "pic") is small


def test_rasterize_unknown_layout_draws_dots():
    points = np.array([[10, 10], [50, 50], [90, 20]], dtype=np.float32)
    regions = {"outline": np.array([0, 1]), "mouth": np.array([2])}
    lmap = F.rasterize_landmarks(points, regions, 100, thickness=3)
    assert lmap[0, 10, 10] > 0.9 and lmap[0, 50, 50] > 0.9 and lmap[0, 30, 30] == 0
    assert lmap[2, 20, 90] > 0.9 and not lmap[1].any()
    with pytest.raises(InputError, match="Unknown landmark region"):
        F.rasterize_landmarks(points, regions, 100, include=("teeth",))
    with pytest.raises(InputError, match="indexes past"):
        F.rasterize_landmarks(points, {"mouth": np.array([7])}, 100)


def test_106_layout_partitions_all_points():
    regions = F.layout_regions(106)
    every = np.concatenate([regions[name] for name in F.LANDMARK_REGIONS])
    assert sorted(every.tolist()) == list(range(106))
    assert regions["mouth"].tolist() == list(range(52, 72))
    assert set(F.layout_regions(468)) == set(F.LANDMARK_REGIONS)


def test_prepare_references_needs_images():
    with pytest.raises(InputError, match="No reference images"):
        F.prepare_references([])


# --------------------------------------------------------------------------------------------
# Choosing a detector; insightface is replaced by a stand-in
# --------------------------------------------------------------------------------------------


def test_insightface_with_empty_root_names_the_folder(tmp_path):
    with pytest.raises(WeightsError) as err:
        F.InsightFaceDetector(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "models" / "antelopev2") in message
    assert "scrfd_10g_bnkps.onnx" in message and "glintr100.onnx" in message
    assert "Fix:" in message
    with pytest.raises(WeightsError, match="w600k_r50.onnx"):
        F.InsightFaceDetector(tmp_path, name="buffalo_l")


def test_insightface_nested_zip_folder_gets_a_specific_fix(tmp_path):
    nested = tmp_path / "models" / "antelopev2" / "antelopev2"
    nested.mkdir(parents=True)
    for name in F.INSIGHTFACE_PACK_FILES["antelopev2"]:
        (nested / name).write_bytes(b"")
    with pytest.raises(WeightsError, match="move the .onnx files from"):
        F.InsightFaceDetector(tmp_path)


def _fill_pack(root: Path, name: str = "antelopev2") -> Path:
    folder = root / "models" / name
    folder.mkdir(parents=True)
    for file in F.INSIGHTFACE_PACK_FILES[name]:
        (folder / file).write_bytes(b"")
    return folder


def test_insightface_package_missing_names_the_extra(tmp_path, monkeypatch):
    _fill_pack(tmp_path)
    monkeypatch.setitem(sys.modules, "insightface", None)  # import now fails
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    with pytest.raises(WeightsError, match="pip install insightface onnxruntime"):
        F.InsightFaceDetector(tmp_path)


def test_insightface_outputs_are_mapped(tmp_path, monkeypatch):
    _fill_pack(tmp_path)
    calls = {}

    class FakeFaceAnalysis:
        def __init__(self, name, root, allowed_modules, providers):
            calls.update(name=name, root=root, allowed=allowed_modules, providers=providers)

        def prepare(self, ctx_id, det_size):
            calls["det_size"] = det_size

        def get(self, bgr):
            calls["pixel"] = bgr[0, 0].tolist()
            embedding = np.ones(512, np.float32) / np.sqrt(512)
            return [types.SimpleNamespace(
                bbox=np.array([10, 20, 110, 140], np.float32), det_score=np.float32(0.8),
                kps=F.template_kps(128), landmark_2d_106=np.random.rand(106, 2) * 100,
                normed_embedding=embedding,
            )]

    app = types.ModuleType("insightface.app")
    app.FaceAnalysis = FakeFaceAnalysis
    package = types.ModuleType("insightface")
    package.app = app
    monkeypatch.setitem(sys.modules, "insightface", package)
    monkeypatch.setitem(sys.modules, "insightface.app", app)

    det = F.InsightFaceDetector(tmp_path, det_size=(320, 320))
    assert calls["allowed"] == ["detection", "landmark_2d_106", "recognition"]
    assert calls["name"] == "antelopev2" and Path(calls["root"]) == tmp_path
    assert calls["det_size"] == (320, 320)
    image = np.zeros((200, 200, 3), np.uint8)
    image[0, 0] = [1, 2, 3]
    [face] = det.detect(image)
    assert calls["pixel"] == [3, 2, 1]  # insightface was given BGR
    assert face.landmarks.shape == (106, 2) and face.embedding.shape == (512,)
    assert face.regions["mouth"].tolist() == list(range(52, 72))
    assert face.score == pytest.approx(0.8)
    # default_detector picks it when the files are there.
    assert isinstance(F.default_detector(tmp_path), F.InsightFaceDetector)


def test_default_detector_without_insightface_is_mediapipe(tmp_path, monkeypatch):
    pytest.importorskip("mediapipe")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.insightface to find
    det = F.default_detector()
    assert isinstance(det, F.MediaPipeDetector) and det.name == "mediapipe"
    det.close()


def test_default_detector_with_nothing_names_both_options(tmp_path, monkeypatch):
    monkeypatch.setattr(detector_choice, "mediapipe_available", lambda: False)  # default_detector asks there
    with pytest.raises(WeightsError) as err:
        F.default_detector(tmp_path)
    message = str(err.value)
    # fixes that work as copied: packages that exist on PyPI, not extras of a package nobody published
    assert "pip install mediapipe==0.10.14" in message and "pip install insightface onnxruntime" in message
    assert "portraittalk[" not in message
    assert str(tmp_path / "models" / "antelopev2") in message


# --------------------------------------------------------------------------------------------
# Exposure and colour (normalise_look, PhotoLook)
# --------------------------------------------------------------------------------------------


def _portrait_crop(value_scale: float = 1.0, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic aligned crop with a lit face (landmarks ring) on a mid background, scaled/shifted."""
    size = 128
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size, 3), np.float64)
    image[:] = (90, 120, 160)
    face = (xx - 64) ** 2 / 30**2 + (yy - 64) ** 2 / 40**2 < 1
    image[face] = (225, 180, 150)
    image[(xx - 52) ** 2 + (yy - 55) ** 2 < 9] = (20, 15, 10)  # eyes and mouth: the face's dark features
    image[(xx - 76) ** 2 + (yy - 55) ** 2 < 9] = (20, 15, 10)
    image[(abs(xx - 64) < 10) & (abs(yy - 85) < 3)] = (120, 40, 50)
    image = np.clip(image * value_scale + offset, 0, 255).astype(np.uint8)
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    landmarks = np.stack([64 + 29 * np.cos(angles), 64 + 39 * np.sin(angles)], 1).astype(np.float32)
    return image, landmarks


def test_a_well_exposed_colour_photo_is_left_as_it_is():
    image, landmarks = _portrait_crop()
    look = F.photo_look(image, landmarks)
    assert not look.changed and look.apply(image) is image
    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert look.restore(frames) is frames


def test_a_dark_photo_is_lifted_for_the_model_and_frames_come_back_dark():
    image, landmarks = _portrait_crop(value_scale=0.15)
    look = F.photo_look(image, landmarks)
    assert look.tone is not None and not look.grayscale
    seen = look.apply(image)
    assert np.percentile(seen.max(axis=2), 99.5) == pytest.approx(F.TARGET_HIGHLIGHTS, abs=2)
    # The photo's own pixels survive the round trip exactly (the curve only stretches where they are) ...
    np.testing.assert_array_equal(look.restore(seen), image)
    # ... and a frame drawn at the model's exposure is brought down to the photo's.
    drawn = np.full((1, 4, 4, 3), 180, np.uint8)
    assert look.restore(drawn).max() <= image.max() + 1
    # Whatever the model draws brighter than the photo's brightest comes back as that, not as a glowing patch.
    assert look.restore(np.full((1, 4, 4, 3), 255, np.uint8)).max() == image.max()


def test_a_washed_out_photo_is_darkened_for_the_model_and_restored():
    image, landmarks = _portrait_crop(value_scale=0.4, offset=150)
    look = F.photo_look(image, landmarks)
    assert look.tone is not None
    seen = look.apply(image)
    face = F.head_placement_mask(landmarks, 128, margin=0.0) > 0
    assert np.percentile(seen.min(axis=2)[face], 1) == pytest.approx(F.TARGET_FACE_SHADOWS, abs=2)
    np.testing.assert_array_equal(look.restore(seen), image)


@pytest.mark.parametrize("kind", ["L", "rgb"])
def test_a_gray_photo_gives_gray_frames(kind):
    image, landmarks = _portrait_crop()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    rgb = F.to_rgb_uint8(Image.fromarray(gray, "L") if kind == "L" else np.repeat(gray[..., None], 3, 2))
    look = F.photo_look(rgb, landmarks)
    assert look.grayscale and look.tone is None
    coloured = np.zeros((2, 4, 4, 3), np.uint8)
    coloured[..., 0] = 200  # red lips, as a model trained on colour photos draws them
    restored = look.restore(coloured)
    assert restored.shape == coloured.shape and restored.dtype == np.uint8
    assert (restored == restored[..., :1]).all() and restored[0, 0, 0, 0] == round(0.299 * 200)
    np.testing.assert_array_equal(look.restore(rgb), rgb)  # the photo's own gray pixels stay as they were
    # ComfyUI's float IMAGE tensors too.
    torch = pytest.importorskip("torch")
    floats = torch.from_numpy(coloured.astype(np.float32) / 255)
    back = look.restore(floats)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
    assert torch.allclose(back[..., 0], back[..., 2]) and float(back[0, 0, 0, 0]) == pytest.approx(0.299 * 200 / 255)


def test_slightly_coloured_photos_are_not_gray():
    image, landmarks = _portrait_crop()
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 1] //= 4  # a quarter of the saturation
    assert not F.photo_look(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), landmarks).grayscale


def test_prepare_references_normalises_a_dark_real_photo(astronaut, detector):
    normal = F.prepare_references([astronaut], size=128, detector=detector)[0]
    dark = F.prepare_references([(astronaut * 0.15).astype(np.uint8)], size=128, detector=detector,
                                labels=["dark photo"])[0]
    assert not normal.look.changed and dark.look.tone is not None and dark.label == "dark photo"
    assert np.percentile(dark.image.max(axis=2), 99.5) > 150  # what the model sees is lit
    assert dark.look.restore(dark.image).max() < 60  # what the frames show is the dark photo
