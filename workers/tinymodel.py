"""Write synthetic llama-architecture GGUF models with random weights: the tiny one for the tests
and the demo, and a bigger one that costs what a real model costs, for the benchmark only.

Nothing can be downloaded on the machines the test suite and the demo run on, so this module
builds a stand-in: a 2-layer, 64-wide llama with random weights and a small SentencePiece-style
vocabulary. llama.cpp (and so llama-cpp-python) loads it like any other model: it tokenizes any
UTF-8 text (256 byte-fallback tokens), applies its chat template and generates quickly and
deterministically at temperature 0. **What it generates is noise from random weights**: a stream
of French, English and Dutch words with no meaning. Never serve it to a person as a summary.

The output layer is nudged so the noise looks like text: whole words get a bonus that falls with
their rank in the vocabulary, while byte tokens, word fragments, single letters and the control
tokens (``</s>``, ``<|im_end|>``) get a penalty no context overcomes. The model therefore never
ends a reply on its own, and a completion runs to ``max_tokens``.

Two sizes (``SIZES``), same vocabulary and same nudge:

- ``tiny`` (the default): 2 layers, 64 wide, float32, under 1 MB; thousands of tokens a second.
- ``bench``: 24 layers, 1024 wide (16 query heads, 4 key/value heads), feed-forward 2816, about
  270 million parameters in llama.cpp's 4-bit ``Q4_0`` blocks, about 160 MB, built in a few
  seconds. On one thread of a small server core it generates a few tens of tokens a second and
  reads a prompt at about a hundred: what a 7B model quantised to 4 bits does on a small machine.
  Its text is the same noise. Used by the benchmark only (``bench/llm.py``), which caches it
  under ``var/``. Its quantised blocks are drawn directly (random 4-bit values, one scale per
  block of 32): nothing is quantised, so building it costs about as much as writing it.

Usage::

    python -m workers.tinymodel PATH [--size tiny|bench] [--seed N] [--context-length N]

The file is a pure function of its arguments: the same size and seed give a byte-identical file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# --- shape ---------------------------------------------------------------------------------

#: The tiny model's shape (also ``SIZES["tiny"]``).
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
RMS_EPS = 1e-5
ROPE_FREQ_BASE = 10000.0
DEFAULT_CONTEXT_LENGTH = 512


@dataclass(frozen=True)
class Shape:
    """A model's dimensions and how its layers' weights are stored (``f32``, ``q4_0``, ``q8_0``;
    the embeddings, norms and output layer stay float32: the vocabulary is small)."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    weights: str = "f32"

    def parameters(self, n_vocab: int) -> int:
        """How many weights the file holds."""
        kv = self.n_head_kv * (self.n_embd // self.n_head)
        per_layer = 2 * self.n_embd * self.n_embd + 2 * kv * self.n_embd + 3 * self.n_ff * self.n_embd
        return self.n_layer * (per_layer + 2 * self.n_embd) + self.n_embd + 2 * n_vocab * self.n_embd

    def describe(self) -> str:
        return (
            f"{self.n_layer} layers x {self.n_embd} wide, {self.n_head}/{self.n_head_kv} heads, "
            f"feed-forward {self.n_ff}, {self.weights}"
        )


SIZES: dict[str, Shape] = {
    "tiny": Shape(n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD, n_head_kv=N_HEAD, n_ff=N_FF),
    # Llama-like proportions (grouped-query attention, feed-forward 2.75x), 4-bit blocks.
    "bench": Shape(n_embd=1024, n_layer=24, n_head=16, n_head_kv=4, n_ff=2816, weights="q4_0"),
}

# --- vocabulary ----------------------------------------------------------------------------

SPACE = "\u2581"  # "▁", SentencePiece's word-boundary mark
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# GGUF token types (gguf.TokenType), repeated here so the vocabulary is built without gguf.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6

#: ChatML, opened with the BOS token: llama-cpp-python's Jinja chat handler does not add one.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORD_TEXT = """
de la le et les des en un une du à est que pour dans par sur au il qui ne pas
the of and to a in is that for it on with as be this by are at from or
het een van en is dat niet op te met voor zijn er aan ook die dan maar naar
se ce sont avec ou plus été son ses leur nous vous elle ils
was not have all will can has more which their we you they
bij om als door tot nog over worden wordt heeft kan uit
facture factures assemblée générale procès verbal copropriété copropriétaire syndic conseil
charges budget travaux compte comptes décision décisions vote votes majorité point ordre jour
réunion président secrétaire immeuble lot lots quote part fonds réserve devis contrat
montant total date article propriétaire propriétaires gestion entretien ascenseur toiture
façade chauffage eau électricité assurance sinistre paiement échéance rappel
invoice meeting general minutes owner owners building works account payment decision
factuur vergadering algemene notulen eigenaar eigenaars gebouw werken rekening betaling
besluit stemming lasten beheer syndicus mede eigendom kosten bedrag
janvier février mars avril mai juin juillet août septembre octobre novembre décembre
euro euros année mois prix taux résumé
"""
#: Whole words, most common first (a word's rank sets its score and its bonus when generated).
WORDS: list[str] = list(dict.fromkeys(_WORD_TEXT.split()))

#: Punctuation, generated now and then between the words.
PUNCTUATION = [".", ",", ":", ";", "'", "-", "(", ")", "?", "!", "€", "%", "\u2014", "\u2019"]

#: Single characters: every word is built from them, and text made of them needs no bytes.
CHARACTERS = list(
    'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éèêëàâäçîïôöùûüÉÈÀÇ/"&@#+=*_<>[]{}'
)


#: Generation bias (in logits, before the final norm's scaling) of the most common word; it
#: falls linearly to 0 for the last word. Punctuation gets a quarter of it.
_WORD_BONUS = 2.0
#: Generation bias of everything that is not a whole word or punctuation: far below any word.
_NEVER = -200.0


@dataclass(frozen=True)
class Vocabulary:
    """The token table written to ``tokenizer.ggml.*``, and each token's generation bias."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    bias: list[float]


def build_vocabulary() -> Vocabulary:
    """Return the SentencePiece-style vocabulary, in a fixed order.

    Ids 0-2 are ``<unk>``, ``<s>``, ``</s>``; ids 3-258 the byte-fallback tokens ``<0x00>`` to
    ``<0xFF>``; then the word pieces with decreasing scores, then the two ChatML markers.

    llama.cpp's SentencePiece tokenizer only merges two adjacent pieces when the merged text is
    itself a token, so every prefix of every word (``▁f``, ``▁fa``, ``▁fac``…) is in the
    vocabulary; they are the fragments that lose the generation bias.
    """
    tokens: list[str] = []
    types: list[int] = []
    scores: list[float] = []
    bias: list[float] = []
    seen: set[str] = set()

    def add(text: str, kind: int, score: float, logit_bias: float) -> None:
        if text in seen:
            return
        seen.add(text)
        tokens.append(text)
        types.append(kind)
        scores.append(score)
        bias.append(logit_bias)

    add(UNK, _UNKNOWN, 0.0, _NEVER)
    add(BOS, _CONTROL, 0.0, _NEVER)
    add(EOS, _CONTROL, 0.0, _NEVER)
    for byte in range(256):
        add(f"<0x{byte:02X}>", _BYTE, 0.0, _NEVER)

    rank = 0

    def next_score() -> float:
        nonlocal rank
        rank += 1
        return -float(rank)

    # The whole words first, so their ids (and the bonus) follow their rank; their prefixes
    # are appended after them and only matter to the tokenizer.
    words = [SPACE + word for word in WORDS]
    for i, word in enumerate(words):
        add(word, _NORMAL, next_score(), _WORD_BONUS * (1.0 - i / len(words)))
    for mark in PUNCTUATION:
        add(mark, _NORMAL, next_score(), _WORD_BONUS / 4)
    add(SPACE, _NORMAL, next_score(), _NEVER)
    for word in words:
        for end in range(2, len(word)):
            add(word[:end], _NORMAL, next_score(), _NEVER)
    for char in CHARACTERS:
        add(char, _NORMAL, next_score(), _NEVER)

    add(IM_START, _CONTROL, 0.0, _NEVER)
    add(IM_END, _CONTROL, 0.0, _NEVER)
    return Vocabulary(tokens=tokens, scores=scores, types=types, bias=bias)


# --- weights -------------------------------------------------------------------------------

#: Residual dimension 0 holds this constant and no layer writes to it, so after the final norm
#: it acts as a bias input: column 0 of ``output.weight`` carries each token's generation bias.
_ANCHOR = 2.0
#: Layer weights are drawn with standard deviation ``_GAIN / sqrt(fan_in)``: strong enough that
#: the context steers the noise (weaker layers loop on "dans la dans la…"), weak enough that
#: the anchor still dominates the final norm.
_GAIN = 2.0
#: Standard deviation of the rest of ``output.weight``: the random part of every logit.
_OUTPUT_STD = 0.3


#: The standard deviation of a quantised block's values in units of its scale: ``q4_0`` holds
#: -7..7 (nibble 0, which would be -8, is drawn as 8, i.e. 0, so the values are centred), ``q8_0``
#: holds -127..127 (-128 drawn as 0).
_BLOCK_STD = {"q4_0": 17.5**0.5, "q8_0": 5397.5**0.5}
#: Values per quantised block, and bytes per block (a float16 scale, then the values).
_BLOCK = 32
_BLOCK_BYTES = {"q4_0": 2 + _BLOCK // 2, "q8_0": 2 + _BLOCK}


def _quantised(rng: np.random.Generator, rows: int, cols: int, std: float, kind: str, zero_row0: bool):
    """A ``(rows, cols)`` weight matrix in llama.cpp's ``kind`` blocks (as the bytes GGUF holds),
    its values drawn uniformly and scaled to ``std``; row 0 all zeros if ``zero_row0``."""
    import numpy as np

    if cols % _BLOCK:
        raise ValueError(f"a quantised row must be a multiple of {_BLOCK} wide, not {cols}")
    blocks = cols // _BLOCK
    if kind == "q4_0":
        packed = np.frombuffer(rng.bytes(rows * blocks * _BLOCK // 2), dtype=np.uint8)
        low, high = packed & 0x0F, packed >> 4
        low = np.where(low == 0, np.uint8(8), low)
        high = np.where(high == 0, np.uint8(8), high)
        values = (low | (high << 4)).astype(np.uint8).reshape(rows, blocks, _BLOCK // 2)
    elif kind == "q8_0":
        signed = np.frombuffer(rng.bytes(rows * blocks * _BLOCK), dtype=np.int8)
        values = np.where(signed == -128, np.int8(0), signed).view(np.uint8).reshape(rows, blocks, _BLOCK)
    else:
        raise ValueError(f"unknown weight type {kind!r}")
    scales = np.full((rows, blocks, 1), std / _BLOCK_STD[kind], dtype=np.float16)
    if zero_row0:
        scales[0] = 0.0
    data = np.concatenate([scales.view(np.uint8).reshape(rows, blocks, 2), values], axis=2)
    return data.reshape(rows, blocks * _BLOCK_BYTES[kind])


def _weights(vocab: Vocabulary, rng: np.random.Generator, shape: Shape) -> dict[str, np.ndarray]:
    """Return every tensor by its GGUF name, in writing order (numpy shapes: ``(out, in)``; a
    quantised matrix as its bytes, ``(out, bytes per row)``)."""
    import numpy as np

    n_embd, n_ff = shape.n_embd, shape.n_ff
    n_kv = shape.n_head_kv * (n_embd // shape.n_head)
    # Deeper models add more layers' outputs to the residual: each layer is weakened so that the
    # residual ends about as large as the tiny model's, and the anchor still dominates the norm.
    gain = _GAIN * (2 / shape.n_layer) ** 0.5

    def normal(size: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(size, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def matrix(rows: int, cols: int, std: float, zero_row0: bool = False) -> np.ndarray:
        if shape.weights != "f32":
            return _quantised(rng, rows, cols, std, shape.weights, zero_row0)
        weights = normal((rows, cols), std)
        if zero_row0:
            weights[0, :] = 0.0
        return weights

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    n_vocab = len(vocab.tokens)
    tensors: dict[str, np.ndarray] = {}

    embed = normal((n_vocab, n_embd), 1.0)
    embed[:, 0] = _ANCHOR
    tensors["token_embd.weight"] = embed

    for layer in range(shape.n_layer):
        block = f"blk.{layer}"
        tensors[f"{block}.attn_norm.weight"] = ones(n_embd)
        tensors[f"{block}.attn_q.weight"] = matrix(n_embd, n_embd, gain * n_embd**-0.5)
        tensors[f"{block}.attn_k.weight"] = matrix(n_kv, n_embd, gain * n_embd**-0.5)
        tensors[f"{block}.attn_v.weight"] = matrix(n_kv, n_embd, gain * n_embd**-0.5)
        tensors[f"{block}.attn_output.weight"] = matrix(n_embd, n_embd, gain * n_embd**-0.5, zero_row0=True)
        tensors[f"{block}.ffn_norm.weight"] = ones(n_embd)
        tensors[f"{block}.ffn_gate.weight"] = matrix(n_ff, n_embd, gain * n_embd**-0.5)
        tensors[f"{block}.ffn_up.weight"] = matrix(n_ff, n_embd, gain * n_embd**-0.5)
        tensors[f"{block}.ffn_down.weight"] = matrix(n_embd, n_ff, gain * n_ff**-0.5, zero_row0=True)

    tensors["output_norm.weight"] = ones(n_embd)
    # The random part of a logit keeps the tiny model's spread whatever the width.
    output = normal((n_vocab, n_embd), _OUTPUT_STD * (N_EMBD / n_embd) ** 0.5)
    output[:, 0] = np.asarray(vocab.bias, dtype=np.float32) / np.float32(_ANCHOR)
    tensors["output.weight"] = output
    return tensors


# --- file ----------------------------------------------------------------------------------


def build_tiny_model(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> Path:
    """Write the tiny model to ``path`` (creating parent folders) and return its path.

    ``seed`` picks the random weights; the same arguments always give a byte-identical file.
    ``context_length`` is the training context recorded in the file (``llama.context_length``);
    it is small by default so tests can exercise long-input handling cheaply.
    """
    return build_model(path, "tiny", seed=seed, context_length=context_length)


def build_model(
    path: str | os.PathLike[str],
    size: str = "tiny",
    *,
    seed: int = 0,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> Path:
    """Write the model of ``size`` (a key of ``SIZES``) to ``path`` (creating parent folders)
    and return its path; the same arguments always give a byte-identical file.

    The file is written next to ``path`` under a temporary name and then renamed, so a reader
    never sees a half-written model.
    """
    import gguf
    import numpy as np

    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}: one of {', '.join(SIZES)}")
    if context_length < 16:
        raise ValueError(f"context_length must be at least 16, got {context_length}")
    shape = SIZES[size]

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    vocab = build_vocabulary()
    tensors = _weights(vocab, np.random.default_rng(seed), shape)
    quantised = {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[shape.weights]

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, arch="llama")
        try:
            if size == "tiny":
                writer.add_name(f"KoproGo tiny test model (random weights, seed {seed})")
            else:
                writer.add_name(f"KoproGo {size} model (random weights, seed {seed})")
            writer.add_file_type(file_type)
            writer.add_vocab_size(len(vocab.tokens))
            writer.add_context_length(context_length)
            writer.add_embedding_length(shape.n_embd)
            writer.add_block_count(shape.n_layer)
            writer.add_feed_forward_length(shape.n_ff)
            writer.add_head_count(shape.n_head)
            writer.add_head_count_kv(shape.n_head_kv)
            writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
            writer.add_rope_freq_base(ROPE_FREQ_BASE)
            writer.add_layer_norm_rms_eps(RMS_EPS)

            writer.add_tokenizer_model("llama")
            writer.add_token_list(vocab.tokens)
            writer.add_token_scores(vocab.scores)
            writer.add_token_types(vocab.types)
            writer.add_unk_token_id(vocab.tokens.index(UNK))
            writer.add_bos_token_id(vocab.tokens.index(BOS))
            writer.add_eos_token_id(vocab.tokens.index(EOS))
            writer.add_add_bos_token(True)
            writer.add_add_eos_token(False)
            writer.add_add_space_prefix(True)
            writer.add_chat_template(CHAT_TEMPLATE)

            for name, tensor in tensors.items():
                if tensor.dtype == np.uint8:  # a quantised matrix's blocks
                    writer.add_tensor(name, tensor, raw_dtype=quantised[shape.weights])
                else:
                    writer.add_tensor(name, tensor)

            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        tmp.chmod(0o644)  # mkstemp creates 0600; the model is meant to be shared
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the model to PATH and print one line saying what was written."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.tinymodel",
        description="Write a random-weight llama GGUF model (noise: for tests, the demo, the bench).",
    )
    parser.add_argument("path", metavar="PATH", help="where to write the .gguf file")
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="tiny", help="tiny (tests, demo; default) or bench"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--context-length",
        type=int,
        default=DEFAULT_CONTEXT_LENGTH,
        help=f"training context recorded in the file (default {DEFAULT_CONTEXT_LENGTH})",
    )
    args = parser.parse_args(argv)

    written = build_model(args.path, args.size, seed=args.seed, context_length=args.context_length)
    n_vocab = len(build_vocabulary().tokens)
    shape = SIZES[args.size]
    print(
        f"wrote {written} ({written.stat().st_size} bytes): {args.size} random-weight llama, "
        f"{shape.describe()}, {shape.parameters(n_vocab) / 1e6:.1f} M parameters, vocabulary {n_vocab}, "
        f"context {args.context_length}, seed {args.seed}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
