"""The ``portraittalk`` command end to end, and every bad input ending in one clear line."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import soundfile as sf
from PIL import Image

from conftest import tone
from portraittalk_core.cli import main
from portraittalk_core.io.video import probe_video

RATE = 16_000


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "portraittalk_core.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_generate_end_to_end(tmp_path, reference_path):
    seconds, fps = 1.3, 12.0
    audio = tmp_path / "speech.wav"
    sf.write(audio, tone(seconds, 44_100), 44_100)        # odd rate for the model: resampled
    out = tmp_path / "videos" / "talk.mp4"
    done = run_cli("generate", "--random-weights", "--ref", str(reference_path), "--ref", str(reference_path),
                   "--audio", str(audio), "--out", str(out), "--prompt", "with red hair", "--steps", "2",
                   "--fps", str(fps), "--seed", "3", "--sampler", "euler")
    assert done.returncode == 0, done.stderr
    assert "RANDOM WEIGHTS" in done.stderr                 # never silently random
    assert "Traceback" not in done.stderr
    info = probe_video(out)
    assert info.frames == math.ceil(seconds * fps)
    assert info.fps == pytest.approx(fps)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert abs(info.audio_duration - seconds) <= 1 / fps
    assert abs(info.duration - seconds) <= 1 / fps + 1e-6


@pytest.fixture()
def inputs(tmp_path, reference_path):
    audio = tmp_path / "speech.wav"
    sf.write(audio, tone(0.5), RATE)
    return dict(ref=str(reference_path), audio=str(audio), out=str(tmp_path / "out.mp4"), tmp=tmp_path)


def generate(inputs, *extra, ref=None, audio=None):
    return main(["generate", "--random-weights", "--steps", "1", "--ref", ref or inputs["ref"],
                 "--audio", audio or inputs["audio"], "--out", inputs["out"], *extra])


def assert_clear_error(capsys, code, *words):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Fix:" in errors[0], err
    for word in words:
        assert word in err, err
    return err


def test_no_face(inputs, capsys):
    blank = inputs["tmp"] / "wall.png"
    Image.new("RGB", (256, 256), (120, 130, 140)).save(blank)
    assert_clear_error(capsys, generate(inputs, ref=str(blank)), "No face", "wall.png")


def test_several_faces_takes_the_largest_with_a_warning(inputs, reference_path, capsys):
    photo = np.asarray(Image.open(reference_path).convert("RGB"))
    small = np.asarray(Image.fromarray(photo).resize((160, 160)))
    group = np.full((320, 480, 3), 255, np.uint8)
    group[:, :320] = photo
    group[80:240, 320:] = small
    path = inputs["tmp"] / "two.png"
    Image.fromarray(group).save(path)
    assert generate(inputs, ref=str(path)) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "2 faces" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: "), warned   # one line, no source code shown


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_odd_image_modes(inputs, reference_path, mode):
    path = inputs["tmp"] / f"ref_{mode.replace(';', '')}.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
    image = Image.open(reference_path)
    if mode == "I;16":  # a real 16-bit greyscale photo uses the full 0..65535 range
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    image.save(path)
    assert generate(inputs, ref=str(path)) == 0


def test_corrupt_and_missing_image(inputs, capsys):
    bad = inputs["tmp"] / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    assert_clear_error(capsys, generate(inputs, ref=str(bad)), "broken.jpg")
    assert_clear_error(capsys, generate(inputs, ref=str(inputs["tmp"] / "absent.png")), "absent.png")


def test_silent_audio(inputs, capsys):
    silent = inputs["tmp"] / "silent.wav"
    sf.write(silent, np.zeros(RATE, np.float32), RATE)
    assert_clear_error(capsys, generate(inputs, audio=str(silent)), "silent")


def test_audio_shorter_than_a_frame(inputs, capsys):
    short = inputs["tmp"] / "click.wav"
    sf.write(short, tone(0.02), RATE)
    assert_clear_error(capsys, generate(inputs, audio=str(short)), "shorter than one frame")


def test_corrupt_and_missing_audio(inputs, capsys):
    bad = inputs["tmp"] / "noise.mp3"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    assert_clear_error(capsys, generate(inputs, audio=str(bad)), "noise.mp3")
    assert_clear_error(capsys, generate(inputs, audio=str(inputs["tmp"] / "absent.wav")), "absent.wav")


def test_odd_rate_audio_works(inputs):
    odd = inputs["tmp"] / "phone.wav"
    sf.write(odd, tone(0.5, 8_000), 8_000)
    assert generate(inputs, audio=str(odd)) == 0
    assert probe_video(inputs["out"]).frames == 13


def test_huge_audio_is_refused_early(inputs, capsys, monkeypatch):
    import portraittalk_core.audio as audio

    real = audio.load_audio
    monkeypatch.setattr(audio, "load_audio", lambda src, **kw: real(src, **{**kw, "max_seconds": 0.2}))
    assert_clear_error(capsys, generate(inputs), "max_seconds")


def test_missing_weights_and_no_model(inputs, capsys, tmp_path):
    missing = tmp_path / "models" / "portraittalk.safetensors"
    code = main(["generate", "--weights", str(missing), "--backbone", str(tmp_path / "sd15"), "--ref", inputs["ref"],
                 "--audio", inputs["audio"], "--out", inputs["out"]])
    assert_clear_error(capsys, code, "'portraittalk.safetensors'", str(missing.parent))  # checked before the backbone
    code = main(["generate", "--backbone", str(tmp_path / "sd15"), "--ref", inputs["ref"], "--audio", inputs["audio"],
                 "--out", inputs["out"]])
    assert_clear_error(capsys, code, "--backbone was given without --weights", "--weights")


def test_without_weights_the_embedded_demo_model_is_used_and_a_missing_one_is_named(inputs, capsys, monkeypatch,
                                                                                   tmp_path):
    from portraittalk_core import assets

    monkeypatch.setattr(assets, "DEMO_WEIGHTS", tmp_path / "gone" / "portraittalk_demo.safetensors")
    code = main(["generate", "--ref", inputs["ref"], "--audio", inputs["audio"], "--out", inputs["out"]])
    assert_clear_error(capsys, code, "'portraittalk_demo.safetensors'", str(tmp_path / "gone"), "train-demo")


def test_no_file_left_on_error(inputs):
    silent = inputs["tmp"] / "silent.wav"
    sf.write(silent, np.zeros(RATE, np.float32), RATE)
    generate(inputs, audio=str(silent))
    assert not (inputs["tmp"] / "out.mp4").exists()
    assert not [p for p in inputs["tmp"].iterdir() if p.suffix == ".part" or ".part" in p.name]


def test_demo_runs_the_embedded_model_on_the_shipped_face(tmp_path, capsys):
    """README's first command without setup: the committed demo model, the shipped face and speech."""
    from portraittalk_core.assets import DEMO_WEIGHTS
    from portraittalk_core.io.video import probe_video

    assert DEMO_WEIGHTS.stat().st_size <= 30 * 2**20                  # the budget for the embedded model
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--steps", "1", "--out", str(out)]) == 0
    assert "embedded demo model" in capsys.readouterr().err
    info = probe_video(out)
    assert info.frames == 161 and info.width == 64


@pytest.fixture()
def no_model_loads(monkeypatch):
    """Any model load fails the test: the argument checks must end the run before one."""
    from portraittalk_core.pipeline import PortraitTalkPipeline

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")
    for name in ("random", "demo", "from_pretrained"):
        monkeypatch.setattr(PortraitTalkPipeline, name, loaded)


@pytest.mark.parametrize("extra, words", [
    (["--audio-scale", "1e30"], ["--audio-scale", "from 0 to 30"]),
    (["--text-scale", "nan"], ["--text-scale", "nan"]),
    (["--identity-scale", "-1"], ["--identity-scale"]),
    (["--restyle-scale", "inf"], ["--restyle-scale"]),
    (["--identity-strength", "1e9"], ["--identity-strength", "from 0 to 2"]),
    (["--audio-strength", "nan"], ["--audio-strength"]),
    (["--fps", "0"], ["--fps", "from 1 to 120"]),
    (["--fps", "0.5"], ["--fps"]),
    (["--fps", "-5"], ["--fps"]),
    (["--resolution", "100000"], ["--resolution", "from 64 to 2048"]),
    (["--resolution", "-64"], ["--resolution", "e.g. 64"]),
    (["--resolution", "100"], ["not a multiple of 64", "e.g. 128"]),
    (["--seed", str(2**64)], ["--seed", "18446744073709551615"]),
    (["--seed", "-1"], ["--seed"]),
    (["--seed", "1" + "0" * 400], ["--seed"]),
    (["--steps", "0"], ["--steps"]),
    (["--steps", "100000"], ["--steps", "from 1 to 200"]),
    (["--denoise", "nan"], ["--denoise"]),
    (["--sampler", "ddpm_magic"], ["unknown sampler", "ddim"]),
    (["--device", "cuda"] if not __import__("torch").cuda.is_available() else ["--device", "cuda:99"],
     ["cuda", "--device cpu"]),
    (["--device", "tpu9"], ["unknown device 'tpu9'", "--device cpu"]),
    (["--dtype", "float16"] if not __import__("torch").cuda.is_available() else ["--dtype", "float16",
                                                                                  "--device", "cpu"],
     ["float16 does not run on the CPU", "--dtype float32"]),
])
def test_bad_numbers_devices_and_dtypes_end_in_one_line_before_any_model_loads(inputs, capsys, no_model_loads,
                                                                              extra, words):
    assert_clear_error(capsys, generate(inputs, *extra), *words)
    assert not (inputs["tmp"] / "out.mp4").exists()


def test_the_output_never_replaces_an_input(inputs, capsys, no_model_loads, tmp_path):
    ref, audio = tmp_path / "face.png", tmp_path / "speech.wav"
    Image.open(inputs["ref"]).save(ref)
    sf.write(audio, tone(0.5), RATE)
    video = tmp_path / "speech.mp4"        # audio taken from a video, and the same video named as the output
    video.write_bytes(b"not really a video, but an input all the same")
    before = {p: p.read_bytes() for p in (ref, audio, video)}
    for out, used_audio in ((ref, audio), (audio, audio), (video, video)):
        code = main(["generate", "--random-weights", "--ref", str(ref), "--audio", str(used_audio),
                     "--out", str(out)])
        assert_clear_error(capsys, code, out.name)
    code = main(["generate", "--random-weights", "--ref", str(ref), "--audio", str(audio),
                 "--head-motion", str(video), "--out", str(tmp_path / "." / "speech.mp4")])
    assert_clear_error(capsys, code, "is also an input")
    assert {p: p.read_bytes() for p in (ref, audio, video)} == before


@pytest.mark.parametrize("name, words", [("out.gif", [".mp4", "out.mp4"]), ("out.avi", ["out.mp4"]),
                                         ("out", ["out.mp4"])])
def test_an_output_extension_we_cannot_write_is_refused(inputs, capsys, no_model_loads, name, words):
    assert_clear_error(capsys, main(["generate", "--random-weights", "--ref", inputs["ref"], "--audio",
                                     inputs["audio"], "--out", str(inputs["tmp"] / name)]), *words)
    assert not (inputs["tmp"] / name).exists()


def test_an_output_folder_or_an_unwritable_folder_is_refused_on_its_own_line(inputs, capsys, no_model_loads):
    folder = inputs["tmp"] / "videos.mp4"
    folder.mkdir()
    blocker = inputs["tmp"] / "file"
    blocker.write_text("a file where a folder should be")
    for out, words in ((folder, ["is a folder", "talk.mp4"]), (blocker / "talk.mp4", ["cannot write the video"])):
        code = main(["generate", "--random-weights", "--ref", inputs["ref"], "--audio", inputs["audio"],
                     "--out", str(out)])
        err = assert_clear_error(capsys, code, *words)
        assert err.splitlines()[-1].startswith("error: ")           # not glued to a progress bar


def test_weights_that_are_a_folder_or_lack_config_fields_are_named(inputs, capsys, no_model_loads, tmp_path):
    import json

    from safetensors.torch import save_file

    code = main(["generate", "--weights", str(tmp_path), "--ref", inputs["ref"], "--audio", inputs["audio"],
                 "--out", inputs["out"]])
    assert_clear_error(capsys, code, "is a folder", ".safetensors file inside it")
    thin = tmp_path / "thin.safetensors"
    save_file({"x": torch.zeros(1)}, str(thin), metadata={"format": "portraittalk",
                                                          "config": json.dumps({"name": "thin", "fps": 25})})
    code = main(["generate", "--weights", str(thin), "--ref", inputs["ref"], "--audio", inputs["audio"],
                 "--out", inputs["out"]])
    assert_clear_error(capsys, code, "thin.safetensors", "lacks unet, motion, vae, text_encoder")


def test_a_truncated_wav_is_refused_with_its_declared_length(inputs, capsys):
    whole = inputs["tmp"] / "whole.wav"
    sf.write(whole, tone(6.55), RATE, subtype="PCM_16")
    cut = inputs["tmp"] / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:44 + int(2.18 * RATE) * 2])
    assert_clear_error(capsys, generate(inputs, audio=str(cut)), "cut.wav", "truncated", "6.55 s", "2.18 s")


def test_missing_inputs_are_named_before_any_model_loads(inputs, capsys, no_model_loads):
    assert_clear_error(capsys, generate(inputs, ref=str(inputs["tmp"] / "absent.png")), "absent.png")
    assert_clear_error(capsys, generate(inputs, audio=str(inputs["tmp"])), "is a folder")


def test_native_library_logs_stay_off_stderr_and_the_error_is_the_last_line(inputs, tmp_path):
    """mediapipe's TFLite and absl print from their own threads; the error must still be the last line."""
    wall = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (120, 130, 140)).save(wall)
    done = run_cli("generate", "--random-weights", "--steps", "1", "--ref", str(wall), "--audio", inputs["audio"],
                   "--out", inputs["out"])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-1].startswith("error: No face"), done.stderr
    assert not [line for line in lines if "TensorFlow Lite" in line or line.startswith(("W0000", "I0000"))], lines


def test_argparse_mistakes_end_in_the_same_one_line_form(capsys):
    for argv in (["generate", "--steps", "1.5"], ["generat"], ["generate", "--dtype", "float64"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2
        assert err.splitlines()[-1].startswith("error: ") and "Fix: see `portraittalk" in err.splitlines()[-1], err


def test_a_prompt_longer_than_the_text_encoder_reads_is_warned_in_one_line(inputs, capsys):
    assert generate(inputs, "--prompt", "with red hair " * 40, "--no-speech-head-motion") == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "tokens long" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: the prompt is "), warned


@pytest.mark.parametrize("argv, words", [
    (["bench", "--device", "tpu9"], ["unknown device 'tpu9'"]),
    (["bench", "--dtype", "float16", "--device", "cpu"], ["float16 does not run on the CPU"]),
    (["bench", "--frames", "0"], ["--frames"]),
    (["bench", "--resolution", "100000"], ["--resolution"]),
    (["eval", "--clips", "-3"], ["--clips"]),
    (["eval", "--text-scale", "nan"], ["--text-scale"]),
    (["eval", "--steps", "0"], ["--steps"]),
    (["prepare", "/nonexistent/videos", "--out", "/nonexistent/shards"], ["no folder of videos", "/nonexistent"]),
])
def test_bench_eval_and_prepare_check_their_arguments_before_any_work(capsys, monkeypatch, argv, words):
    import portraittalk_core.bench as bench
    import portraittalk_core.evaluation.evaluate as evaluate

    def worked(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")
    monkeypatch.setattr(bench, "run_bench", worked)
    monkeypatch.setattr(evaluate, "evaluate", worked)
    assert_clear_error(capsys, main(argv), *words)


def test_prepare_with_no_videos_is_an_error_not_an_empty_success(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no videos here")
    assert_clear_error(capsys, main(["prepare", str(tmp_path), "--out", str(tmp_path / "shards")]), "no videos")
