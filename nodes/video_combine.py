"""Video Combine: frames + speech + fps -> an mp4 (H.264 + AAC) in output/, previewed in the node."""

import os

import comfy.model_management
import folder_paths
from comfy_api.latest import InputImpl, io, ui

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core import audio as audio_io
from ..portraittalk_core.io.video import VideoWriter

CHUNK = 16  # frames handed to the encoder at a time; interruption is checked between chunks


class VideoCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkVideoCombine",
            display_name="PortraitTalk Video Combine",
            category="PortraitTalk",
            description="Writes frames and the speech into an mp4 (H.264 video, AAC audio) in ComfyUI's output "
                        "folder, shows it in the node, and passes it on as VIDEO. An interrupted run leaves no "
                        "half-written file.",
            inputs=[
                io.Image.Input("images", tooltip="The frames (an IMAGE batch), e.g. from PortraitTalk Sampler."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Frame rate; use the fps the audio was encoded at."),
                io.String.Input("filename_prefix", default="PortraitTalk/talk",
                                tooltip="Where in output/ to save; a counter is appended."),
                io.Audio.Input("audio", optional=True, tooltip="The speech to put in the video."),
                io.Int.Input("crf", default=18, min=0, max=51, optional=True,
                             tooltip="H.264 quality: lower is better and larger; 18 is visually lossless."),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The written video, as ComfyUI's VIDEO.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, fps=25.0, filename_prefix="PortraitTalk/talk", audio=None, crf=18) -> io.NodeOutput:
        check_finite(fps=fps)
        height, width = images.shape[1:3]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        filename = f"{name}_{counter:05}_.mp4"
        path = os.path.join(folder, filename)
        wave = audio_io.load_audio(audio, sample_rate=48_000) if audio is not None else None
        with VideoWriter(path, fps, audio=wave, crf=crf) as writer:
            for start in range(0, images.shape[0], CHUNK):
                comfy.model_management.throw_exception_if_processing_interrupted()
                writer.write(images[start:start + CHUNK])
        preview = ui.PreviewVideo([ui.SavedResult(filename, subfolder, io.FolderType.output)])
        return io.NodeOutput(InputImpl.VideoFromFile(path), ui=preview)
