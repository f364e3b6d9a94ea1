"""What is said, and by which voice: short English sentences spoken by espeak-ng.

espeak-ng is a formant synthesiser: robotic, but deterministic (the same text, voice, rate and
pitch give the same samples, bit for bit), small, and installed by ``setup.sh``. That is what a
reproducible dataset needs; the demo model only has to learn when and how wide the mouth opens.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import soundfile

from ..audio import SAMPLE_RATE, Waveform, load_audio
from ..errors import InputError, PortraitTalkError

ESPEAK = "espeak-ng"

# Short sentences (5-12 words) covering open vowels (a, o), spread vowels (ee), rounded vowels
# (oo), lip closures (p, b, m), fricatives (f, v, s, sh) and pauses (commas), in varied orders.
# dataset.py holds the last ones out for validation and testing by position: changing this list
# changes every dataset's splits.
SENTENCES: tuple[str, ...] = (
    "The cat sat on a warm mat, purring softly.",
    "Please bring me a cup of hot coffee.",
    "We moved to a tiny house by the sea.",
    "My brother plays the violin every Monday morning.",
    "Look at the moon, it is so bright tonight.",
    "She sells fresh fish at the busy market.",
    "Open the window, the room is far too warm.",
    "Good food and good friends make a happy life.",
    "The blue balloon floated away over the park.",
    "I think we should leave before it rains.",
    "Every evening, the old man feeds the pigeons.",
    "Why do you always whisper when you are nervous?",
    "A big brown bear ate all the berries.",
    "Turn left at the bridge, then keep going straight.",
    "Peter picked a peck of pickled peppers, they say.",
    "The train was late, so we walked home.",
    "Maybe tomorrow we can paint the fence white.",
    "Sheep graze quietly on the green hills of Wales.",
    "Who took my shoes from under the bed?",
    "Five foxes jumped over the fallen fir tree.",
    "Our team won the match, and everyone cheered.",
    "Please speak slowly, I am still learning English.",
    "The baker wakes up at four to make bread.",
    "Oh no, I forgot my keys at the office!",
    "Water boils at one hundred degrees, at sea level.",
    "Bright yellow flowers bloom early in the spring.",
    "Can you see the boats out on the lake?",
    "Mother made pancakes with maple syrup for breakfast.",
    "The museum opens at nine, except on Sundays.",
    "Quickly, grab an umbrella, the storm is coming.",
    "Reading books before bed helps me fall asleep.",
    "The puppy chased its tail around and around.",
    "We need more milk, eggs, and a loaf of bread.",
    "Her voice echoed through the empty marble hall.",
    "Thank you for waiting, the doctor will see you now.",
    "Autumn leaves are falling, orange and gold.",
    "Measure twice, cut once, as my father says.",
    "The zoo keeper fed the hungry hippo a melon.",
    "Jump in the pool, the water feels lovely.",
    "Nobody knows where the old road used to go.",
)

# espeak-ng voices: a language or accent, plus a variant (m1-m7 male, f1-f5 female timbres).
# All are part of the Debian espeak-ng-data package. espeak-ng accepts an unknown variant silently,
# so only names checked with `espeak-ng -v <voice>` belong here.
VOICES: tuple[str, ...] = (
    "en-us+m3",
    "en-gb+f2",
    "en-us+f4",
    "en-029+m1",
    "en-gb-scotland+m2",
    "en-gb-x-rp+f3",
    "en-us+m7",
    "en-gb-x-gbclan+f1",
)

# Silence added before and after the speech, so every clip starts and ends with the mouth closed.
PAD_SECONDS = 0.2


def speak(text: str, voice: str = "en-us+m3", rate_wpm: int = 160, pitch: int = 50,
          pad_seconds: float = PAD_SECONDS) -> Waveform:
    """``text`` spoken by espeak-ng, as a 16 kHz mono Waveform with ``pad_seconds`` of silence at
    both ends. ``rate_wpm`` is words per minute (80-450), ``pitch`` 0-99 (50 is the voice's own)."""
    if not text.strip():
        raise InputError("the text to speak is empty", "pass a sentence, e.g. one of SENTENCES")
    if not 80 <= int(rate_wpm) <= 450 or not 0 <= int(pitch) <= 99:
        raise InputError(f"rate {rate_wpm} wpm / pitch {pitch} is outside espeak-ng's range",
                         "use a rate of 80-450 words per minute and a pitch of 0-99")
    executable = shutil.which(ESPEAK)
    if executable is None:
        raise PortraitTalkError(f"{ESPEAK} is not installed; it speaks the synthetic dataset's sentences",
                                "apt-get install espeak-ng (setup.sh installs it)")
    # The text goes in on stdin, not as an argument, so a sentence can never be read as an option.
    result = subprocess.run(
        [executable, "-v", voice, "-s", str(int(rate_wpm)), "-p", str(int(pitch)), "--stdout"],
        input=text.encode("utf-8"), capture_output=True, check=False,
    )
    if result.returncode != 0 or len(result.stdout) <= 44:
        reason = result.stderr.decode("utf-8", "replace").strip() or f"exit code {result.returncode}"
        raise PortraitTalkError(f"{ESPEAK} could not speak with voice {voice!r} ({reason})",
                                f"use a voice that `{ESPEAK} --voices=en` lists, e.g. one of {', '.join(VOICES)}")
    # espeak-ng streams its WAV with a placeholder length in the header; libsndfile reads to the end.
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    wave = load_audio(samples, source_rate=rate, sample_rate=SAMPLE_RATE)
    pad = np.zeros(int(round(pad_seconds * SAMPLE_RATE)), dtype=np.float32)
    return Waveform(np.concatenate([pad, wave.samples, pad]), SAMPLE_RATE)


def voice_slug(voice: str) -> str:
    """A file-name-safe form of a voice: 'en-gb-scotland+m2' -> 'en-gb-scotland-m2'."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in voice.lower())
