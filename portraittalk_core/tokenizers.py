"""Tokenizers for the small backbones trained here (tiny, demo); SD1.5 checkpoints bring CLIP's own.

Both are ``transformers.CLIPTokenizer`` over GPT-2's byte alphabet, built in code so that no vocabulary file
has to be shipped, and named in the model config (``PortraitTalkConfig.tokenizer``):

- ``byte_level``: single bytes, no merges. A prompt costs one token per character, so 77 positions hold
  about 75 characters: the procedural captions (up to about 230) lost everything after the hair colour, shirt
  and background included.
- ``caption_words``: the bytes plus BPE merges that make every word of the procedural captions one token
  (``CAPTION_WORDS``); other words still tokenize, byte by byte. A caption is at most about 51 tokens.

``CAPTION_WORDS`` is frozen: the merges, and so the token ids a trained model learnt, come from it. A word
added to the synthetic captions later tokenizes byte by byte until a new tokenizer name is made for it.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from transformers import CLIPTokenizer

from .errors import WeightsError

# Every word of synth.identity.caption(), over all attributes.
CAPTION_WORDS: tuple[str, ...] = (
    "a", "an", "and", "background", "bald", "beard", "beige", "berry", "black", "blond", "blue", "bob", "brown",
    "bun", "coral", "crimson", "curly", "dark", "deep", "eyebrows", "eyes", "face", "fair", "frames", "front",
    "full", "glasses", "gold", "gradient", "green", "grey", "hair", "in", "light", "lips", "long", "mauve",
    "medium", "natural", "of", "olive", "orange", "oval", "pale", "person", "pink", "purple", "red", "rose",
    "round", "shirt", "short", "silver", "skin", "square", "striped", "stubble", "tan", "teal", "thick", "thin",
    "to", "tortoiseshell", "wearing", "white", "with", "yellow",
)

END_OF_WORD = "</w>"


def byte_alphabet() -> list[str]:
    """GPT-2's reversible byte -> unicode map, as CLIP's BPE uses: 256 printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(byte)
        else:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def learn_merges(words) -> list[tuple[str, str]]:
    """BPE merges, in rank order, after which every one of ``words`` (lower-case letters) is a single token.

    Ordinary BPE learning: merge the most frequent adjacent pair (ties: the smaller pair), everywhere, until
    no word has two pieces left. Applied by rank, as CLIPTokenizer does, the merges rebuild each word whole.
    """
    pieces = [list(w[:-1]) + [w[-1] + END_OF_WORD] for w in sorted(set(words))]
    merges = []
    while True:
        counts = Counter(pair for p in pieces for pair in zip(p, p[1:]))
        if not counts:
            return merges
        pair = min(counts, key=lambda q: (-counts[q], q))
        merges.append(pair)
        pieces = [_merge(p, pair) for p in pieces]


def _merge(pieces: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
            out.append(pieces[i] + pieces[i + 1])
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out


def clip_tokenizer(merges: list[tuple[str, str]] = (), max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer over the byte alphabet (each byte alone and word-final) plus ``merges``."""
    chars = byte_alphabet()
    tokens = chars + [c + END_OF_WORD for c in chars] + ["".join(pair) for pair in merges]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        return CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"),
                             model_max_length=max_length)


TOKENIZERS = {
    "byte_level": lambda: clip_tokenizer(),
    "caption_words": lambda: clip_tokenizer(learn_merges(CAPTION_WORDS)),
}


def make_tokenizer(name: str) -> CLIPTokenizer:
    if name not in TOKENIZERS:
        raise WeightsError(f"unknown tokenizer '{name}' in the model config",
                           f"use a model made by this version of PortraitTalk (known: {', '.join(TOKENIZERS)})")
    return TOKENIZERS[name]()
