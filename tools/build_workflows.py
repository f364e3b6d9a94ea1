"""Build the example workflows in workflows/ (UI format, and API format in workflows/api/).

The graphs are written here in API form, readable and diffable; the UI layout is generated from a running
ComfyUI's /object_info with the pack installed:

    python tools/build_workflows.py http://127.0.0.1:8188
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_workflow import api_to_ui  # noqa: E402

# The core from the editable install (setup.sh), else from this checkout: appended, never first, so that the
# pack's `nodes` package cannot shadow a module of that name.
if importlib.util.find_spec("portraittalk_core") is None:
    sys.path.append(str(Path(__file__).resolve().parent.parent))
from portraittalk_core.config import preset  # noqa: E402
from portraittalk_core.head_motion import SPEECH_SMOOTHING_S  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a portrait photo of a person talking, natural light, sharp focus"
NEGATIVE = "blurry, lowres, deformed face, extra teeth, watermark"


def sampler(steps: int, sampler_name: str, audio_scale: float = 3.5, **links) -> dict:
    """A PortraitTalk Sampler node with the defaults every example uses; refs and audio from nodes 6 and 8.
    ``audio_scale``: the node's default, or the model's own (the demo model's config says which)."""
    return {"class_type": "PortraitTalkSampler", "inputs": {
        **links, "refs": ["6", 0], "audio_features": ["8", 0], "seed": 0, "steps": steps, "sampler_name": sampler_name,
        "scheduler": "normal", "text_scale": 5.0, "identity_scale": 2.0, "audio_scale": audio_scale,
        "identity_strength": 1.0, "audio_strength": 1.0, "motion_scale": 1.0, "structure_strength": 1.0,
        "clip_frames": 0, "motion_frames": -1, "region": "model default",
        "denoise": 1.0, "paste_photo": True}}


def sd15_basic(prompt: str = PROMPT) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "PortraitTalkLoader", "inputs": {"weights": "portraittalk_sd15.safetensors",
                                                             "face_detector": "auto",
                                                             "audio_encoder": "wav2vec2-base-960h"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}},
        "6": {"class_type": "PortraitTalkLoadIdentityRefs", "inputs": {"portraittalk": ["4", 0], "images": ["5", 0],
                                                                       "resolution": 512}},
        "7": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}},
        "8": {"class_type": "PortraitTalkAudioEncode", "inputs": {"portraittalk": ["4", 0], "audio": ["7", 0],
                                                                  "fps": 25.0}},
        "9": sampler(model=["1", 0], vae=["1", 2], positive=["2", 0], negative=["3", 0],
                     portraittalk=["4", 0], steps=25, sampler_name="ddim"),
        "10": {"class_type": "PortraitTalkVideoCombine", "inputs": {"images": ["9", 0], "fps": ["9", 1],
                                                                    "filename_prefix": "PortraitTalk/talk",
                                                                    "audio": ["7", 0], "crf": 18}},
    }


def sd15_several_refs() -> dict:
    graph = sd15_basic()
    graph["11"] = {"class_type": "LoadImage", "inputs": {"image": "portrait_2.png"}}
    graph["12"] = {"class_type": "ImageBatch", "inputs": {"image1": ["5", 0], "image2": ["11", 0]}}
    graph["6"]["inputs"]["images"] = ["12", 0]
    return graph


def sd15_prompt_customisation() -> dict:
    return sd15_basic("a portrait photo of a person talking, with red hair, in a neon-lit street, smiling")


def sd15_lora_and_upscaler() -> dict:
    graph = sd15_basic()
    graph["11"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                          "lora_name": "your_sd15_style_lora.safetensors",
                                                          "strength_model": 0.8, "strength_clip": 0.8}}
    graph["2"]["inputs"]["clip"] = graph["3"]["inputs"]["clip"] = ["11", 1]
    graph["9"]["inputs"]["model"] = ["11", 0]
    graph["12"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x2plus.pth"}}
    graph["13"] = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["12", 0], "image": ["9", 0]}}
    graph["10"]["inputs"]["images"] = ["13", 0]
    return graph


def tiny_smoke() -> dict:
    """Runs anywhere after `portraittalk comfy-smoke --comfyui <ComfyUI>`: random weights, noise video."""
    return {
        "1": {"class_type": "PortraitTalkLoader", "inputs": {"weights": "portraittalk_tiny_random.safetensors",
                                                             "face_detector": "mediapipe", "audio_encoder": "auto"}},
        "2": {"class_type": "PortraitTalkBackboneLoader", "inputs": {"backbone": "portraittalk_tiny_backbone"}},
        "3": {"class_type": "PortraitTalkTextEncode", "inputs": {"text_encoder": ["2", 2], "text": "a person talking"}},
        "4": {"class_type": "PortraitTalkTextEncode", "inputs": {"text_encoder": ["2", 2], "text": ""}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "portraittalk_reference.jpg"}},
        "6": {"class_type": "PortraitTalkLoadIdentityRefs", "inputs": {"portraittalk": ["1", 0], "images": ["5", 0],
                                                                       "resolution": 64}},
        "7": {"class_type": "LoadAudio", "inputs": {"audio": "portraittalk_speech.flac"}},
        "8": {"class_type": "PortraitTalkAudioEncode", "inputs": {"portraittalk": ["1", 0], "audio": ["7", 0],
                                                                  "fps": 12.5}},
        "9": sampler(model=["2", 0], vae=["2", 1], positive=["3", 0], negative=["4", 0],
                     portraittalk=["1", 0], steps=2, sampler_name="euler"),
        "10": {"class_type": "PortraitTalkVideoCombine", "inputs": {"images": ["9", 0], "fps": ["9", 1],
                                                                    "filename_prefix": "PortraitTalk/smoke",
                                                                    "audio": ["7", 0], "crf": 18}},
    }


def demo() -> dict:
    """The embedded demo model end to end: runs right after install, nothing to download or copy."""
    weights = "portraittalk_demo.safetensors"
    return {
        "1": {"class_type": "PortraitTalkLoader", "inputs": {"weights": weights, "face_detector": "auto",
                                                             "audio_encoder": "auto"}},
        "2": {"class_type": "PortraitTalkBackboneLoader", "inputs": {"backbone": weights}},
        "3": {"class_type": "PortraitTalkTextEncode", "inputs": {"text_encoder": ["2", 2], "text": ""}},
        "4": {"class_type": "PortraitTalkTextEncode", "inputs": {"text_encoder": ["2", 2], "text": ""}},
        "5": {"class_type": "PortraitTalkDemoInputs", "inputs": {}},
        "6": {"class_type": "PortraitTalkLoadIdentityRefs", "inputs": {"portraittalk": ["1", 0], "images": ["5", 0],
                                                                       "resolution": 64}},
        "8": {"class_type": "PortraitTalkAudioEncode", "inputs": {"portraittalk": ["1", 0], "audio": ["5", 1],
                                                                  "fps": 25.0}},
        # The demo model predicts the head's movement from the speech, as `portraittalk demo` uses it.
        "11": {"class_type": "PortraitTalkHeadMotionFromSpeech", "inputs": {"portraittalk": ["1", 0],
                                                                            "audio_features": ["8", 0],
                                                                            "smoothing": SPEECH_SMOOTHING_S}},
        "9": sampler(model=["2", 0], vae=["2", 1], positive=["3", 0], negative=["4", 0], portraittalk=["1", 0],
                     head_motion=["11", 0], steps=25, sampler_name="ddim", audio_scale=preset("demo").audio_scale),
        "10": {"class_type": "PortraitTalkVideoCombine", "inputs": {"images": ["9", 0], "fps": ["9", 1],
                                                                    "filename_prefix": "PortraitTalk/demo",
                                                                    "audio": ["5", 1], "crf": 18}},
    }


def hallo() -> dict:
    """Hallo's published weights, converted (README, "Run Hallo's weights"): the denoiser through the stock UNet
    loader, sd-vae-ft-mse through the stock VAE loader (a diffusers folder in models/vae, listed by its file), the
    converted PortraitTalk file with insightface and wav2vec2-base-960h; no prompt."""
    model = preset("hallo")
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "hallo_unet.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"}},
        "4": {"class_type": "PortraitTalkLoader", "inputs": {"weights": "portraittalk_hallo.safetensors",
                                                             "face_detector": "insightface antelopev2",
                                                             "audio_encoder": "wav2vec2-base-960h"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}},
        "6": {"class_type": "PortraitTalkLoadIdentityRefs", "inputs": {"portraittalk": ["4", 0], "images": ["5", 0],
                                                                       "resolution": model.resolution}},
        "7": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}},
        "8": {"class_type": "PortraitTalkAudioEncode", "inputs": {"portraittalk": ["4", 0], "audio": ["7", 0],
                                                                  "fps": model.fps}},
        "9": {"class_type": "PortraitTalkHalloSampler", "inputs": {
            "model": ["1", 0], "vae": ["2", 0], "portraittalk": ["4", 0], "refs": ["6", 0], "audio_features": ["8", 0],
            "seed": 42, "steps": 40, "sampler_name": "ddim", "scheduler": "simple", "audio_scale": model.audio_scale,
            "motion_scale": 1.0}},
        "10": {"class_type": "PortraitTalkVideoCombine", "inputs": {"images": ["9", 0], "fps": ["9", 1],
                                                                    "filename_prefix": "PortraitTalk/hallo",
                                                                    "audio": ["7", 0], "crf": 18}},
    }


EXAMPLES = {
    "portraittalk_demo": demo,
    "portraittalk_basic": sd15_basic,
    "portraittalk_several_references": sd15_several_refs,
    "portraittalk_prompt_customisation": sd15_prompt_customisation,
    "portraittalk_lora_and_upscaler": sd15_lora_and_upscaler,
    "portraittalk_tiny_smoke": tiny_smoke,
    "portraittalk_hallo": hallo,
}


def main(server: str) -> None:
    object_info = json.load(urllib.request.urlopen(server + "/object_info"))
    (ROOT / "workflows" / "api").mkdir(parents=True, exist_ok=True)
    for name, build in EXAMPLES.items():
        graph = build()
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(graph, indent=1) + "\n")
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(api_to_ui(graph, object_info), indent=1) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
