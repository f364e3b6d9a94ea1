"""Files in and out, checked: the core's readers and writers of media and weights files.

- ``io.video``: the mp4 writer (``VideoWriter``, ``write_video``), the one video frame reader
  (``video_frames``) and ``probe_video``;
- ``io.audio``: audio from a file, an array or a ComfyUI AUDIO value as one checked ``Waveform``
  (``load_audio``, ``check_not_silent``, ``check_long_enough``);
- ``io.safetensors``: reading safetensors files (metadata, tensors) and checking tensors against a model.

Nothing is imported here: each module pulls in its own library (PyAV, librosa, safetensors), and a caller
of one need not load the others.
"""
