"""Write a tiny synthetic llama-architecture GGUF model, for the tests and the demo only.

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

Usage::

    python -m workers.tinymodel PATH [--seed N] [--context-length N]

The file is a pure function of its arguments: the same seed gives a byte-identical file.
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

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
RMS_EPS = 1e-5
ROPE_FREQ_BASE = 10000.0
DEFAULT_CONTEXT_LENGTH = 512

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


def _weights(vocab: Vocabulary, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Return every tensor by its GGUF name, in writing order (numpy shapes: ``(out, in)``)."""
    import numpy as np

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    n_vocab = len(vocab.tokens)
    tensors: dict[str, np.ndarray] = {}

    embed = normal((n_vocab, N_EMBD), 1.0)
    embed[:, 0] = _ANCHOR
    tensors["token_embd.weight"] = embed

    for layer in range(N_LAYER):
        block = f"blk.{layer}"
        tensors[f"{block}.attn_norm.weight"] = ones(N_EMBD)
        tensors[f"{block}.attn_q.weight"] = normal((N_EMBD, N_EMBD), _GAIN * N_EMBD**-0.5)
        tensors[f"{block}.attn_k.weight"] = normal((N_EMBD, N_EMBD), _GAIN * N_EMBD**-0.5)
        tensors[f"{block}.attn_v.weight"] = normal((N_EMBD, N_EMBD), _GAIN * N_EMBD**-0.5)
        attn_out = normal((N_EMBD, N_EMBD), _GAIN * N_EMBD**-0.5)
        attn_out[0, :] = 0.0
        tensors[f"{block}.attn_output.weight"] = attn_out
        tensors[f"{block}.ffn_norm.weight"] = ones(N_EMBD)
        tensors[f"{block}.ffn_gate.weight"] = normal((N_FF, N_EMBD), _GAIN * N_EMBD**-0.5)
        tensors[f"{block}.ffn_up.weight"] = normal((N_FF, N_EMBD), _GAIN * N_EMBD**-0.5)
        ffn_down = normal((N_EMBD, N_FF), _GAIN * N_FF**-0.5)
        ffn_down[0, :] = 0.0
        tensors[f"{block}.ffn_down.weight"] = ffn_down

    tensors["output_norm.weight"] = ones(N_EMBD)
    output = normal((n_vocab, N_EMBD), _OUTPUT_STD)
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

    The file is written next to ``path`` under a temporary name and then renamed, so a reader
    never sees a half-written model.
    """
    import gguf
    import numpy as np

    if context_length < 16:
        raise ValueError(f"context_length must be at least 16, got {context_length}")

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    vocab = build_vocabulary()
    tensors = _weights(vocab, np.random.default_rng(seed))

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, arch="llama")
        try:
            writer.add_name(f"KoproGo tiny test model (random weights, seed {seed})")
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            writer.add_vocab_size(len(vocab.tokens))
            writer.add_context_length(context_length)
            writer.add_embedding_length(N_EMBD)
            writer.add_block_count(N_LAYER)
            writer.add_feed_forward_length(N_FF)
            writer.add_head_count(N_HEAD)
            writer.add_head_count_kv(N_HEAD)
            writer.add_rope_dimension_count(N_EMBD // N_HEAD)
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
        description="Write a tiny random-weight llama GGUF model (noise, for tests and the demo).",
    )
    parser.add_argument("path", metavar="PATH", help="where to write the .gguf file")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--context-length",
        type=int,
        default=DEFAULT_CONTEXT_LENGTH,
        help=f"training context recorded in the file (default {DEFAULT_CONTEXT_LENGTH})",
    )
    args = parser.parse_args(argv)

    written = build_tiny_model(args.path, seed=args.seed, context_length=args.context_length)
    n_vocab = len(build_vocabulary().tokens)
    print(
        f"wrote {written} ({written.stat().st_size} bytes): tiny random-weight llama, "
        f"{N_LAYER} layers x {N_EMBD} wide, vocabulary {n_vocab}, "
        f"context {args.context_length}, seed {args.seed}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
