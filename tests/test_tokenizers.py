"""The tokenizers of the backbones trained here: whole caption words for the demo, bytes for the rest."""

from __future__ import annotations

import re

import numpy as np
import pytest

from portraittalk_core.config import PortraitTalkConfig, demo, tiny
from portraittalk_core.errors import WeightsError
from portraittalk_core.synth.identity import caption, sample_identity
from portraittalk_core.tokenizers import CAPTION_WORDS, learn_merges, make_tokenizer


def test_every_caption_word_is_one_token_and_a_caption_fits():
    """If synth's captions gain a word this fails: add it under a new tokenizer name (old models keep theirs)."""
    tokenizer = make_tokenizer("caption_words")
    captions = [caption(sample_identity(np.random.default_rng(seed), seed)) for seed in range(300)]
    words = {w for c in captions for w in re.findall(r"[a-z]+", c)}
    assert words <= set(CAPTION_WORDS)
    for word in CAPTION_WORDS:
        assert tokenizer.tokenize(word) == [word + "</w>"]
    longest = max(len(tokenizer(c)["input_ids"]) for c in captions)
    assert longest <= 60      # of 77 positions; byte by byte the same captions need up to about 230


def test_learnt_merges_rebuild_any_word_list_whole():
    words = ["banana", "band", "bandana", "nab", "a", "ab"]
    merges = learn_merges(words)
    from portraittalk_core.tokenizers import clip_tokenizer
    tokenizer = clip_tokenizer(merges)
    assert all(tokenizer.tokenize(w) == [w + "</w>"] for w in words)
    assert tokenizer.tokenize("nanab") != ["nanab</w>"]           # other words still tokenize, in pieces
    assert learn_merges(list(reversed(words))) == merges            # the same merges whatever the order


def test_byte_level_ids_are_those_older_models_learnt():
    """Models saved before caption_words (no tokenizer in their config) read prompts with these ids."""
    tokenizer = make_tokenizer("byte_level")
    assert len(tokenizer) == 514
    assert tokenizer("a bc")["input_ids"] == [512, 353, 98, 355, 513]
    old = PortraitTalkConfig.from_json(demo().replace(tokenizer="byte_level").to_json().replace(
        ', "tokenizer": "byte_level"', ""))
    assert old.tokenizer == "byte_level" == tiny().tokenizer and demo().tokenizer == "caption_words"


def test_unknown_tokenizer_is_a_clear_error():
    with pytest.raises(WeightsError, match="unknown tokenizer 'words_v9'"):
        make_tokenizer("words_v9")
