"""PortraitTalk's ComfyUI nodes (V3 schema). Each node converts ComfyUI types and calls portraittalk_core."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .apply import ApplyPortraitTalk
from .audio_encode import AudioEncode
from .backbone import BackboneLoader, TextEncode
from .demo_inputs import DemoInputs
from .hallo_sampler import HalloSampler
from .head_motion import HeadMotionFromVideo
from .head_motion_from_speech import HeadMotionFromSpeech
from .identity_refs import LoadIdentityRefs
from .loader import PortraitTalkLoader
from .paste_photo import PastePhoto
from .sampler import PortraitTalkSampler
from .video_combine import VideoCombine


class PortraitTalkExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [PortraitTalkLoader, LoadIdentityRefs, AudioEncode, PortraitTalkSampler, VideoCombine,
                ApplyPortraitTalk, BackboneLoader, TextEncode, DemoInputs, PastePhoto, HeadMotionFromVideo,
                HeadMotionFromSpeech, HalloSampler]


async def comfy_entrypoint() -> PortraitTalkExtension:
    return PortraitTalkExtension()
