"""PortraitTalk's own ComfyUI socket types."""

from comfy_api.latest import io

# A loaded PortraitTalk model (core.comfyui.bundle.PortraitTalkBundle): networks, face detector, audio front end.
PortraitTalk = io.Custom("PORTRAITTALK")
# Aligned reference faces with their embeddings and structure maps (core.conditioning.References); for a
# Hallo-layout model, the photo as Hallo reads it (core.conditioning.HalloInputs).
IdentityRefs = io.Custom("PORTRAITTALK_REFS")
# Per-frame audio feature windows at a frame rate (core.audio.AudioFeatures) and the waveform.
AudioFeatures = io.Custom("PORTRAITTALK_AUDIO")
# A driving video's head motion (core.head_motion.HeadMotion): a transform a frame at the video's frame rate.
HeadMotion = io.Custom("PORTRAITTALK_HEAD_MOTION")
