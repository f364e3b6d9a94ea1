"""PortraitTalk Demo Inputs: the face and speech shipped with the pack, so the demo workflow runs with no
files to copy into ComfyUI's input folder."""

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from ..portraittalk_core import audio as audio_io
from ..portraittalk_core.assets import default_speech, demo_face


class DemoInputs(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkDemoInputs",
            display_name="PortraitTalk Demo Inputs",
            category="PortraitTalk",
            description="The demo face (a procedural face the embedded demo model never saw in training) and a "
                        "spoken sentence, both shipped with the pack. Swap in Load Image and Load Audio for your own.",
            inputs=[],
            outputs=[io.Image.Output(display_name="face", tooltip="The demo face, 256x256."),
                     io.Audio.Output(display_name="speech", tooltip="A 6.4 s sentence spoken by espeak-ng.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        face = np.asarray(Image.open(demo_face()).convert("RGB"), np.float32) / 255.0
        wave = audio_io.load_audio(default_speech())
        speech = {"waveform": torch.from_numpy(np.asarray(wave.samples, np.float32))[None, None],
                  "sample_rate": wave.sample_rate}
        return io.NodeOutput(torch.from_numpy(face)[None], speech)
