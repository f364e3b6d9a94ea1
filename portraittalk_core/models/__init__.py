"""PortraitTalk's networks, one per file, on diffusers building blocks."""

from .animate_net import AnimateNet
from .attention import AttentionContext
from .face_encoder import FaceEncoder
from .head_pose import SpeechHeadMotion, movement_since_first
from .identity_net import IdentityNet
from .portraittalk import PortraitTalkModel
from .projection import AudioProjection, IdentityProjection

__all__ = ["AnimateNet", "AttentionContext", "AudioProjection", "FaceEncoder", "IdentityNet",
           "IdentityProjection", "PortraitTalkModel", "SpeechHeadMotion", "movement_since_first"]
