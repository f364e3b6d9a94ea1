"""The ``portraittalk`` command: ``generate`` a talking-face video, ``bench`` the pipeline.

Problems the user can fix end in one line on stderr ("error: <problem>. Fix: <fix>") and exit code
2, never in a traceback; a cancelled run (Ctrl-C) exits 130 and leaves no partial video behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from .assets import default_reference, default_speech, demo_face, demo_weights
from .config import preset
from .errors import Cancelled, InputError, PortraitTalkError, PortraitTalkWarning
from .generation import settings as generation_settings

DTYPES = ("float32", "float16", "bfloat16")
# The generation settings eval takes, as generate does (the rest are eval's own or fixed by the test).
EVAL_SETTINGS = ["steps", "sampler", "denoise", "region", "paste_photo", "restyle_scale", "head_motion_from_speech",
                 "text_scale", "identity_scale", "audio_scale", "seed"]


def _quiet_libraries() -> None:
    # Library chatter (diffusers casting notes, mediapipe/absl logs) would bury our own messages.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", type=Path, help="PortraitTalk weights (.safetensors)")
    g.add_argument("--backbone", type=Path, help="SD1.5 backbone: diffusers folder or single-file .safetensors")
    g.add_argument("--tokenizer", type=Path, help="CLIP tokenizer folder (vocab.json, merges.txt) for a single-file backbone")
    g.add_argument("--vae", type=Path, help="VAE (diffusers folder or .safetensors) for a backbone that is a UNet file "
                                            "alone: Hallo's converted hallo_unet.safetensors takes sd-vae-ft-mse")
    g.add_argument("--insightface", type=Path, help="insightface root folder (holds models/antelopev2)")
    g.add_argument("--wav2vec2", type=Path, help="local wav2vec2 folder (config.json, model.safetensors)")
    g.add_argument("--random-weights", action="store_true",
                   help="run on random weights of --config (smoke test: the video is noise, not a face)")
    g.add_argument("--config", default="tiny", choices=("tiny", "sd15", "hallo_tiny"),
                   help="model size for --random-weights (hallo_tiny: Hallo's computation at the test fixtures' size)")
    g.add_argument("--device", default="cuda" if _cuda() else "cpu", help="cpu, cuda, cuda:1, ...")
    g.add_argument("--dtype", default="float32", choices=DTYPES)


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _add_generate_args(p: argparse.ArgumentParser, inputs_required: bool) -> None:
    shipped = "" if inputs_required else " (default: the shipped one)"
    p.add_argument("--ref", action="append", required=inputs_required, type=Path,
                   help="reference photo (repeat for several)" + shipped)
    p.add_argument("--audio", required=inputs_required, type=Path, help="speech: wav, flac, mp3, ogg or m4a" + shipped)
    p.add_argument("--out", required=inputs_required, type=Path,
                   default=None if inputs_required else Path("outputs/demo.mp4"),
                   help="output video: .mp4 (or .m4v, .mov); never one of the inputs")
    p.add_argument("--head-motion", type=Path, default=None, metavar="VIDEO",
                   help="a driving video of a talking head (anyone's): the photo moves as that head moves "
                        "(rotation, scale, shift from its first frame on; played back and forth if shorter "
                        "than the audio)")
    _add_settings(p, generation_settings.cli_settings())
    _add_model_args(p)


def _add_settings(p: argparse.ArgumentParser, names: list[str], **defaults) -> None:
    """Options for the generation settings ``names``, made from their declarations (generation/settings.py);
    ``defaults`` replaces a setting's own default for this command."""
    for name in names:
        declared = generation_settings.declared(name)
        default = defaults.get(name, generation_settings.default(name))
        kind = generation_settings.value_type(name)
        if kind is bool:
            p.add_argument(generation_settings.flag(name), dest=name, action=argparse.BooleanOptionalAction,
                           default=default, help=declared.help)
        else:
            p.add_argument(generation_settings.flag(name), dest=name, type=kind, default=default,
                           choices=declared.choices or None, help=declared.help)


def _settings(args, names: list[str]) -> dict:
    return {name: getattr(args, name) for name in names}


class _Parser(argparse.ArgumentParser):
    """argparse's own errors in the same one-line form as ours (subcommands' parsers are of this class too)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}. Fix: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="portraittalk", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="photos + speech (+ prompt) -> talking-face mp4")
    _add_generate_args(gen, inputs_required=True)
    demo = sub.add_parser("demo", help="the embedded default: shipped photo and speech -> outputs/demo.mp4")
    _add_generate_args(demo, inputs_required=False)

    smoke = sub.add_parser("comfy-smoke", help="write tiny random-weight models and inputs for the ComfyUI "
                                               "smoke workflow (workflows/portraittalk_tiny_smoke.json)")
    smoke.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (or --base-directory)")

    from .synth.dataset import add_synth_arguments  # deferred: synth's imports (cv2, scipy) are not --help's

    add_synth_arguments(sub.add_parser("synth", help="generate a procedural talking-face dataset "
                                                     "(identities, captions, espeak-ng speech, exact landmarks)"))
    prep = sub.add_parser("prepare", help="talking-head videos -> training shards (one per video)")
    prep.add_argument("videos", type=Path, help="folder of videos (HDTF or MEAD layout, or any mp4 with speech)")
    prep.add_argument("--out", type=Path, required=True, help="folder for the shards")
    prep.add_argument("--size", type=int, default=64, help="training resolution of the aligned crops")
    prep.add_argument("--n-mels", type=int, default=80, help="log-mel bands of the stored audio features")
    prep.add_argument("--workers", type=int, default=1, help="parallel processes")

    train = sub.add_parser("train", help="train a small backbone (vae, base), IdentityNet (1), AnimateNet's "
                                         "modules (2) or the head's motion from speech (motion)")
    train.add_argument("--stage", choices=("vae", "decoder", "text", "base", "1", "2", "motion"), required=True)
    train.add_argument("--backbone", type=Path, help="backbone: a file from stage base, or a diffusers folder")
    train.add_argument("--config", default="tiny",
                       help="model config preset (tiny, sd15) or a .json file of training settings")
    train.add_argument("--data", type=Path, help="prepared shards")
    train.add_argument("--out", type=Path, help="output folder (checkpoints, log.jsonl, weights)")
    train.add_argument("--init", type=Path,
                       help="weights to start from (stage 2: stage 1's output; stage motion: stage 2's); a converted "
                            "model (portraittalk convert) of another config warm-starts stage 1 or 2 of --config: "
                            "its tensors that fit are taken, the rest starts fresh")
    train.add_argument("--stills", type=Path, help="stages vae, decoder, text, base and 1: a stills file (synth/stills.py) "
                                                   "mixed with the shards' frames")
    for flag, kind in (("--steps", int), ("--batch-size", int), ("--learning-rate", float), ("--frames", int),
                       ("--seed", int), ("--checkpoint-every", int), ("--ema-decay", float),
                       ("--warmup-steps", int), ("--mouth-weight", float), ("--noise-offset", float)):
        train.add_argument(flag, type=kind)
    train.add_argument("--lr-schedule", choices=("constant", "cosine"))
    train.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"))
    train.add_argument("--gradient-checkpointing", action="store_true", default=None)
    train.add_argument("--text-encoder-lr-scale", type=float,
                       help="stage base: the text encoder's learning rate as a share of the UNet's (default 1; "
                            "0 keeps the text encoder as the backbone has it)")

    recipe = sub.add_parser("train-demo", help="the embedded demo model from nothing: synth, prepare, "
                                               "stages vae, text, base, 1, 2 and motion (fixed seed, resumable)")
    recipe.add_argument("--out", type=Path, default=Path("runs/demo"))
    recipe.add_argument("--scale", type=float, default=1.0, help="multiply the step counts (smoke tests: 0.001)")
    recipe.add_argument("--workers", type=int, default=1)

    ev = sub.add_parser("eval", help="measure a model on held-out procedural clips: lip sync, identity, "
                                     "prompt, flicker, ADFD (default: the embedded demo model)")
    ev.add_argument("--weights", type=Path, help="PortraitTalk weights with their own backbone (default: the demo model)")
    ev.add_argument("--data", type=Path, help="a `portraittalk synth` folder with val/ and test/ (default: made "
                                              "in OUT/synth with the demo recipe's seed)")
    ev.add_argument("--out", type=Path, default=Path("runs/eval"), help="work folder; eval.json is written here")
    ev.add_argument("--clips", type=int, default=12, help="test clips generated (spread over the test identities)")
    ev.add_argument("--prompt-clips", type=int, default=12, help="test clips for the prompt colour test")
    ev.add_argument("--seconds", type=float, default=3.0, help="evaluate the first SECONDS of each clip (0: all)")
    ev.add_argument("--prompt-seconds", type=float, default=1.0, help="audio used per prompt-test clip")
    _add_settings(ev, EVAL_SETTINGS, steps=10)
    ev.add_argument("--prompt-palette", action=argparse.BooleanOptionalAction, default=True,
                    help="also restyle each prompt clip's photo with every other background colour (no animation): "
                         "the prompt figure over the whole palette")
    ev.add_argument("--head-motion", action="store_true",
                    help="the lip sync and identity clips follow the ground truth's head motion (fitted to its brows "
                         "and nose, as a driving video's would be; the mouth and jaw stay the audio's)")
    ev.add_argument("--split", default="test", choices=("test", "val"),
                    help="test: the figures to report; val: for tuning settings without touching test")
    ev.add_argument("--workers", type=int, default=1, help="parallel processes for synth and prepare")

    convert = sub.add_parser("convert", help="another model's published weights -> safetensors files PortraitTalk "
                                             "and ComfyUI load")
    sources = convert.add_subparsers(dest="source", required=True)
    hallo = sources.add_parser("hallo", help="Hallo's net.pth -> hallo_unet.safetensors (the SD1.5 UNet, ComfyUI's "
                                             "UNet loader) and portraittalk_hallo.safetensors (everything else)",
                               description="Reads net.pth as plain tensors only (weights_only=True): nothing "
                                           "else in it is unpickled. Every one of its tensors is converted or, where "
                                           "Hallo's inference never runs it, kept under skipped.* for training.")
    hallo.add_argument("--net", required=True, type=Path, help="Hallo's net.pth (their Hugging Face repository, "
                                                              "hallo/net.pth)")
    hallo.add_argument("--out", required=True, type=Path, help="folder for the two .safetensors files")
    hallo.add_argument("--config", default="hallo", choices=("hallo", "hallo2", "hallo_tiny"),
                       help="how the converted model runs: hallo (Hallo's inference), hallo2 (Hallo2's net.pth, the "
                            "same Net, in its long mode), hallo_tiny (the test fixtures' size)")
    hallo.add_argument("--overwrite", action="store_true", help="replace converted files already in --out")

    bench = sub.add_parser("bench", help="time and memory per stage, against plain AnimateDiff",
                           description="Speed and peak memory of one generation, stage by stage, and of the same UNet "
                                       "in diffusers' AnimateDiffPipeline. Weights are random: speed does not "
                                       "depend on them.")
    bench.add_argument("--config", default="tiny", choices=("tiny", "demo", "sd15"),
                       help="model size: tiny (tests), demo (the embedded demo model's), sd15 (Stable Diffusion 1.5)")
    bench.add_argument("--resolution", type=int, default=None,
                       help="frame size in pixels (default: the config's: 64 for tiny and demo, 512 for sd15)")
    bench.add_argument("--frames", type=int, default=16, help="video frames generated (one clip)")
    bench.add_argument("--steps", type=int, default=4, help="denoising steps")
    bench.add_argument("--sampler", default="ddim", help="ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc")
    bench.add_argument("--device", default="cuda" if _cuda() else "cpu",
                       help="cpu, cuda, cuda:1, ... (default: cuda where a GPU is available)")
    bench.add_argument("--dtype", default="float32", choices=DTYPES, help="weights and activations dtype")
    bench.add_argument("--no-baseline", action="store_true", help="skip the AnimateDiffPipeline comparison")
    bench.add_argument("--json", type=Path, help="also write the report as JSON here")
    return parser


def _model_config(args):
    """The config of the model the run will load, read from the weights file's metadata (cheap), so that every
    argument is checked against it before anything slow loads."""
    from .weights import read_config  # deferred, as main_generate says

    if args.random_weights:
        return preset(args.config)
    if args.weights is not None:
        return read_config(args.weights)
    if args.backbone is not None:
        raise InputError("--backbone was given without --weights", "pass the PortraitTalk weights with --weights")
    return read_config(demo_weights())


def _pipeline(args, device, dtype):
    from .pipeline import PortraitTalkPipeline  # deferred, as main_generate says

    if args.random_weights:
        print(f"portraittalk: RANDOM WEIGHTS ({args.config} config): this checks the machinery; "
              "the video will be noise, not a face.", file=sys.stderr)
        return PortraitTalkPipeline.random(args.config, device=device, dtype=dtype,
                                           insightface_root=args.insightface, wav2vec2_folder=args.wav2vec2)
    if args.weights is None:
        print("portraittalk: no --weights given, using the embedded demo model (trained on procedural faces)",
              file=sys.stderr)
        return PortraitTalkPipeline.demo(device=device, dtype=dtype)
    return PortraitTalkPipeline.from_pretrained(args.weights, args.backbone, args.tokenizer, args.insightface,
                                                args.wav2vec2, device=device, dtype=dtype, vae=args.vae)


def main_generate(args) -> int:
    # deferred, as in every command below: torch and diffusers load only for a command that needs them, so --help
    # and argument errors answer at once (and a machine without torch gets main's one-line error)
    from .checks import (check_device, check_dtype, check_generation_settings, check_hallo_settings, check_input_file,
                         check_output_video)

    settings = generation_settings.GenerationSettings(**_settings(args, generation_settings.cli_settings()))
    # Everything is checked before the model and the face detector load (seconds), so a typo costs nothing.
    device = check_device(args.device)
    dtype = check_dtype(args.dtype, device)
    config = _model_config(args)
    check_generation_settings(settings, config)
    refs = [check_input_file(path, "reference photo") for path in args.ref]
    audio = check_input_file(args.audio, "audio file")
    head_motion = None if args.head_motion is None else check_input_file(args.head_motion, "head-motion video")
    if config.reference_inputs == "hallo":
        check_hallo_settings(generation_settings.resolved(settings, config), config, head_motion)
        if not args.random_weights and args.vae is None:
            raise InputError(f"the model in '{args.weights}' runs on a UNet file and a VAE, and no --vae was given",
                             "pass --vae with stabilityai/sd-vae-ft-mse's folder or diffusion_pytorch_model.safetensors")
    out = check_output_video(args.out, [*refs, audio, head_motion])
    pipe = _pipeline(args, device, dtype)
    result = pipe(refs, audio, out, settings, reference_labels=[str(p) for p in args.ref], head_motion=head_motion)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    print(f"wrote {result.path}: {result.frames} frames at {result.fps:g} fps, "
          f"{result.duration:.2f} s of audio ({stages})")
    return 0


def main_demo(args) -> int:
    # The embedded model knows procedural faces; random weights and other models get the photo.
    default = demo_face() if args.weights is None and not args.random_weights else default_reference()
    args.ref = args.ref or [default]
    args.audio = args.audio or default_speech()
    return main_generate(args)


def _check_eval_numbers(args) -> None:
    """eval's own numbers, before it synthesises or loads anything (its generation settings are checked as
    generate's, against the model, once it is read)."""
    from .checks import check_number  # deferred, as main_generate says

    for flag, value in (("--clips", args.clips), ("--prompt-clips", args.prompt_clips)):
        check_number(flag, value, 0, 10_000, integer=True, default=12)
    check_number("--seconds", args.seconds, 0, 3600, default=3)
    check_number("--prompt-seconds", args.prompt_seconds, 0.1, 3600, default=1)
    check_number("--workers", args.workers, 1, 256, integer=True, default=1)


def main_prepare(args) -> int:
    # deferred, as main_generate says
    from .checks import check_number
    from .data.prepare import VIDEO_SUFFIXES, prepare_folder

    if not args.videos.is_dir():
        raise InputError(f"no folder of videos at '{args.videos}'", "pass the folder that holds the talking-head videos")
    if not any(p.suffix.lower() in VIDEO_SUFFIXES for p in args.videos.rglob("*")):
        raise InputError(f"no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) under '{args.videos}'",
                         "pass the folder that holds the talking-head videos")
    check_number("--size", args.size, 32, 1024, integer=True, default=64)
    check_number("--n-mels", args.n_mels, 8, 256, integer=True, default=80)
    check_number("--workers", args.workers, 1, 256, integer=True, default=1)
    result = prepare_folder(args.videos, args.out, args.size, args.n_mels, workers=args.workers)
    print(f"prepared {len(result.prepared)}, already there {len(result.existing)}, skipped {len(result.skipped)}")
    for video, reason in result.skipped.items():
        print(f"  skipped {video}: {reason}")
    return 0


def main_train(args) -> int:
    import json

    try:
        # deferred: training needs accelerate, an optional extra
        from .training.trainer import Trainer, TrainSettings
    except ImportError as err:
        raise InputError(f"training needs a package that is not installed ({err.name})",
                         "pip install accelerate" if err.name == "accelerate" else
                         'pip install -e ".[train]" in the repository (bash setup.sh does it)') from err

    values = {}
    if str(args.config).endswith(".json"):
        values = json.loads(Path(args.config).read_text())
    else:
        values["config"] = args.config
    for name in ("data", "out", "init", "stills", "backbone", "steps", "batch_size", "learning_rate", "frames", "seed", "checkpoint_every",
                 "ema_decay", "mixed_precision", "gradient_checkpointing", "warmup_steps", "mouth_weight",
                 "noise_offset", "lr_schedule", "text_encoder_lr_scale"):
        value = getattr(args, name)
        if value is not None:
            values[name] = str(value) if isinstance(value, Path) else value
    values["stage"] = int(args.stage) if args.stage.isdigit() else args.stage
    missing = [name for name in ("data", "out") if name not in values]
    if missing:
        raise InputError(f"missing {', '.join('--' + m for m in missing)}", "say where the shards are and where to write")
    path = Trainer(TrainSettings(**values)).train()
    print(f"wrote {path}")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one ``warning: ...`` line (above a progress bar, not glued to it); other libraries'
    warnings are theirs to fix, not the user's, and stay out of the way of our own lines."""
    from tqdm.auto import tqdm


    if issubclass(category, PortraitTalkWarning) or _PACKAGE in Path(filename).resolve().parents:
        tqdm.write(f"warning: {message}", file=sys.stderr)
    elif os.environ.get("PORTRAITTALK_VERBOSE"):
        tqdm.write(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), file=sys.stderr)


_PACKAGE = Path(__file__).resolve().parent


def _native_stderr_to_null() -> None:
    """Native libraries (mediapipe's TFLite and absl) log to file descriptor 2 from their own threads, so their
    lines can land after our last ``error:`` line. Point descriptor 2 at /dev/null and keep Python's own stderr
    on the real one. Only for the command itself: an embedding program (tests, ComfyUI) keeps its stderr.
    PORTRAITTALK_VERBOSE=1 keeps the native logs."""
    if os.environ.get("PORTRAITTALK_VERBOSE"):
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (a GUI host): nothing to silence
        pass


def main(argv=None) -> int:
    if not _torch_installed():  # never a dependency: ComfyUI brings its own build, setup.sh installs one
        print("error: PyTorch is not installed. Fix: pip install torch (or bash setup.sh in the repository)",
              file=sys.stderr)
        return 2
    if argv is None:
        _native_stderr_to_null()
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    logging.basicConfig(level=logging.WARNING, format="portraittalk: %(message)s")
    with warnings.catch_warnings():  # restores the caller's warning handling when an embedding program calls us
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        return _run(args)


def main_synth(args) -> int:
    from .synth.dataset import run_synth  # deferred, as main_generate says

    return run_synth(args)


def main_train_demo(args) -> int:
    from .training.recipe import train_demo  # deferred, as main_generate says

    print(f"wrote {train_demo(args.out, scale=args.scale, workers=args.workers)}")
    return 0


def main_eval(args) -> int:
    # deferred, as main_generate says
    from .checks import check_generation_settings
    from .evaluation.evaluate import evaluate
    from .evaluation.report import format_report
    from .evaluation.settings import EvalSettings
    from .weights import read_config

    _check_eval_numbers(args)
    generation = generation_settings.GenerationSettings(**_settings(args, EVAL_SETTINGS))
    check_generation_settings(generation, read_config(args.weights or demo_weights()))
    report = evaluate(EvalSettings(
        weights=str(args.weights) if args.weights else None, data=str(args.data) if args.data else None,
        out=str(args.out), clips=args.clips, prompt_clips=args.prompt_clips, seconds=args.seconds or None,
        prompt_seconds=args.prompt_seconds, split=args.split, prompt_palette=args.prompt_palette,
        head_motion=args.head_motion, generation=generation, workers=args.workers))
    print(format_report(report))
    print(f"wrote {args.out / 'eval.json'}")
    return 0


def main_comfy_smoke(args) -> int:
    from .smoke import write_smoke_files  # deferred, as main_generate says

    for path in write_smoke_files(args.comfyui):
        print(f"wrote {path}")
    return 0


def main_bench(args) -> int:
    from .bench import run_from_args  # deferred, as main_generate says

    return run_from_args(args)


def main_convert(args) -> int:
    # deferred, as main_generate says
    from .config import HALLO_PRESETS
    from .convert.hallo import convert_hallo

    for path in convert_hallo(args.net, args.out, HALLO_PRESETS[args.config](), overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0


COMMANDS = {"generate": main_generate, "convert": main_convert, "demo": main_demo, "synth": main_synth, "prepare": main_prepare,
            "train": main_train, "train-demo": main_train_demo, "eval": main_eval, "comfy-smoke": main_comfy_smoke,
            "bench": main_bench}


def _run(args) -> int:
    try:
        return COMMANDS[args.command](args)
    except Cancelled:
        print("cancelled: no video was written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("cancelled: no video was written", file=sys.stderr)
        return 130
    except PortraitTalkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
