"""Summaries and translations with llama.cpp (llama-cpp-python) on a local GGUF model.

The model is loaded lazily, once per worker *process*, in the process that uses it: a prefork
parent that generated with several threads and then forked leaves its children hanging
(measured), so nothing here runs at import time.

Long inputs are cut into pieces that fit the context window: a summary is map-reduce (each
piece summarised, then the partial summaries summarised), a translation is piece by piece.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workers.protocol import chat as chat_checks
from workers.protocol import errors, texts
from workers.protocol.errors import GridError, TransientError
from workers.protocol.texts import check_language, check_max_words, check_text

MODEL_ENV = "GRID_LLM_MODEL"

#: How many times this process has loaded a model (tests assert it stays at one).
LOADS = 0
_model = None
_lock = threading.Lock()

_SYSTEM = {
    "fr": "Tu es l'assistant d'une coopérative de logement. Tu réponds uniquement en français.",
    "en": "You are the assistant of a housing cooperative. You answer only in English.",
    "nl": "Je bent de assistent van een wooncoöperatie. Je antwoordt uitsluitend in het Nederlands.",
}
_SUMMARISE = {
    "fr": "Résume le texte suivant en {words} mots au plus, en français :\n\n{text}",
    "en": "Summarise the following text in at most {words} words, in English:\n\n{text}",
    "nl": "Vat de volgende tekst samen in hoogstens {words} woorden, in het Nederlands:\n\n{text}",
}
_COMBINE = {
    "fr": "Voici les résumés successifs des parties d'un même document. Rédige-en un seul "
    "résumé de {words} mots au plus, en français :\n\n{text}",
    "en": "Here are summaries of consecutive parts of one document. Write a single summary "
    "of at most {words} words, in English:\n\n{text}",
    "nl": "Hier volgen samenvattingen van opeenvolgende delen van één document. Schrijf er "
    "één samenvatting van hoogstens {words} woorden van, in het Nederlands:\n\n{text}",
}
_TRANSLATE = {
    "fr": "Traduis le texte suivant en français. Donne uniquement la traduction.\n\n{text}",
    "en": "Translate the following text into English. Give only the translation.\n\n{text}",
    "nl": "Vertaal de volgende tekst naar het Nederlands. Geef alleen de vertaling.\n\n{text}",
}
#: Tokens per word, generously, to bound a summary's length in tokens.
_TOKENS_PER_WORD = 2
#: Tokens reserved for the chat template's own markup around the prompt.
_TEMPLATE_MARGIN = 48


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    pieces: list[int] = field(default_factory=list)
    #: Seconds spent inside llama.cpp's calls (the prompt read, the tokens generated): the
    #: engine's own time, which the benchmark subtracts from a job's end to end to find what the
    #: grid adds. A node's claim, shown and never paid: the ledger meters tokens, not this.
    seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def engine(self) -> dict:
        """What answered (``describe()``) and the seconds it took."""
        return {**describe(), "seconds": round(self.seconds, 4)}

    def counts(self) -> dict:
        """The token and call counts every LLM result carries."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.total_tokens,
            "llm_calls": self.calls,
            "pieces": self.pieces,
        }


def model_path() -> Path:
    value = os.environ.get(MODEL_ENV, "")
    if not value:
        raise TransientError(
            f"No model configured: set {MODEL_ENV} to a GGUF file.", code=errors.ENGINE_UNAVAILABLE
        )
    return Path(value).expanduser()


def threads() -> int:
    """Threads per generation: one per core, at most four (more did not help on small CPUs)."""
    configured = os.environ.get("GRID_LLM_THREADS")
    return int(configured) if configured else max(1, min(4, (os.cpu_count() or 1) // 2))


def context_size() -> int:
    return int(os.environ.get("GRID_LLM_CONTEXT", "4096"))


def get_model():
    """The process's model, loaded on first use."""
    global _model, LOADS
    with _lock:
        if _model is None:
            from llama_cpp import Llama

            path = model_path()
            if not path.is_file():
                raise TransientError(
                    f"Model file {path} not found on this worker.", code=errors.ENGINE_UNAVAILABLE
                )
            try:
                _model = Llama(
                    model_path=str(path),
                    n_ctx=context_size(),
                    n_threads=threads(),
                    n_threads_batch=threads(),
                    verbose=False,
                )
            except ValueError as exc:
                raise TransientError(
                    f"Model {path.name} could not be loaded: {exc}", code=errors.ENGINE_UNAVAILABLE
                ) from None
            LOADS += 1
            atexit.register(_close)
        return _model


def _close() -> None:
    """Free the model while the interpreter can still run llama.cpp's destructor."""
    global _model
    if _model is not None:
        _model.close()
        _model = None


def describe() -> dict:
    """What answered: model file, context and this process's load count."""
    model = get_model()
    return {
        "name": "llama.cpp",
        "model": model_path().name,
        "model_bytes": model_path().stat().st_size,
        "context": model.n_ctx(),
        "loads_in_process": LOADS,
        "pid": os.getpid(),
    }


def count_tokens(text: str) -> int:
    return len(get_model().tokenize(text.encode("utf-8"), add_bos=False, special=False))


def _chat(system: str, user: str, max_tokens: int, usage: Usage, schema: dict | None = None) -> str:
    """The model's answer; held to a JSON schema (a grammar) when one is given."""
    model = get_model()
    extra = {"response_format": {"type": "json_object", "schema": schema}} if schema else {}
    began = time.perf_counter()
    try:
        response = model.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            max_tokens=max_tokens,
            temperature=0.0,
            repeat_penalty=1.1,
            **extra,
        )
    except ValueError as exc:  # llama.cpp: "Requested tokens (…) exceed context window of …"
        raise GridError(f"The model refused the prompt: {exc}", code=errors.LLM_FAILED) from None
    except MemoryError:
        raise TransientError("The worker ran out of memory while generating.") from None
    finally:
        usage.seconds += time.perf_counter() - began
    usage.prompt_tokens += response["usage"]["prompt_tokens"]
    usage.completion_tokens += response["usage"]["completion_tokens"]
    usage.calls += 1
    return (response["choices"][0]["message"]["content"] or "").strip()


def _split(text: str, budget: int) -> list[str]:
    """Cut text into pieces of at most ``budget`` tokens, at paragraph then sentence bounds."""
    if count_tokens(text) <= budget:
        return [text]
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        if count_tokens(paragraph) <= budget:
            units.append(paragraph)
            continue
        for sentence in re.split(r"(?<=[.!?;:])\s+|\n", paragraph):
            if count_tokens(sentence) <= budget:
                units.append(sentence)
            else:  # one endless "sentence" (a table, OCR noise): cut by words
                units.extend(_split_words(sentence, budget))
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for unit in (u for u in units if u.strip()):
        # Measured as it will sit in the piece, after a newline: there a SentencePiece vocabulary
        # loses the word-start mark on the first word, which may cost many more tokens than the
        # unit alone (OCR text is one short line per unit).
        cost = count_tokens("\n" + unit)
        if current and used + cost > budget:
            pieces.append("\n".join(current))
            current, used = [], 0
        current.append(unit)
        used += cost
    if current:
        pieces.append("\n".join(current))
    return pieces


def _split_words(text: str, budget: int) -> list[str]:
    pieces, current = [], []
    for word in text.split():
        if current and count_tokens(" ".join([*current, word])) > budget:
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _room(system: str, template: str) -> int:
    """Tokens left for the text itself once system prompt and instruction are counted."""
    overhead = count_tokens(system) + count_tokens(template.format(words=999, text="")) + _TEMPLATE_MARGIN
    return get_model().n_ctx() - overhead


Progress = Callable[[int, int, Usage], None]


def summarise(text: str, language: str, max_words: int | str, on_progress: Progress | None = None) -> dict:
    """A summary of at most about ``max_words`` words in ``language`` (fr, en or nl)."""
    text, language = check_text(text), check_language(language)
    max_words = check_max_words(max_words)
    system = _SYSTEM[language]
    usage = Usage()
    report = on_progress or (lambda done, total, usage: None)
    n_ctx = get_model().n_ctx()
    # The answer may take at most a quarter of the window; the rest is for the text.
    out_tokens = min(max_words * _TOKENS_PER_WORD, n_ctx // 4)
    map_room = _room(system, _SUMMARISE[language]) - out_tokens
    combine_room = _room(system, _COMBINE[language]) - out_tokens
    # Partial summaries are short enough that each combining round shrinks the text ≥ 2×.
    partial_tokens = max(32, out_tokens // 2)
    if min(map_room, combine_room) < 2 * partial_tokens:
        raise GridError(
            f"The model's context window ({n_ctx} tokens) is too small to summarise.",
            code=errors.LLM_FAILED,
        )
    words = max(10, out_tokens // _TOKENS_PER_WORD)
    pieces = _split(text, map_room)
    usage.pieces.append(len(pieces))
    if len(pieces) == 1:
        summary = _chat(system, _SUMMARISE[language].format(words=words, text=text), out_tokens, usage)
        report(1, 1, usage)
        return _summary_result(summary, language, usage)
    # Map: summarise each piece; reduce: combine partial summaries until one window holds them.
    total_steps = len(pieces) + 1
    partial_words = max(10, partial_tokens // _TOKENS_PER_WORD)
    partials = []
    for index, piece in enumerate(pieces, start=1):
        prompt = _SUMMARISE[language].format(words=partial_words, text=piece)
        partials.append(_chat(system, prompt, partial_tokens, usage))
        report(index, total_steps, usage)
    combined = "\n\n".join(p for p in partials if p)
    while len(pieces := _split(combined, combine_room)) > 1:
        usage.pieces.append(len(pieces))
        combined = "\n\n".join(
            _chat(system, _COMBINE[language].format(words=partial_words, text=p), partial_tokens, usage)
            for p in pieces
        )
    summary = _chat(system, _COMBINE[language].format(words=words, text=combined), out_tokens, usage)
    report(total_steps, total_steps, usage)
    return _summary_result(summary, language, usage)


def _summary_result(summary: str, language: str, usage: Usage) -> dict:
    return {
        "summary": summary,
        "language": language,
        **usage.counts(),
        "engine": usage.engine(),
    }


def translate(text: str, target: str, on_progress: Progress | None = None) -> dict:
    """``text`` translated into ``target`` (fr, en or nl), piece by piece if it is long."""
    text, target = check_text(text), check_language(target)
    system = _SYSTEM[target]
    usage = Usage()
    report = on_progress or (lambda done, total, usage: None)
    # Translations are about as long as their source: leave the other half of the window.
    room = _room(system, _TRANSLATE[target])
    piece_budget = room // 2
    if piece_budget < 32:
        raise GridError("The model's context window is too small to translate.", code=errors.LLM_FAILED)
    pieces = _split(text, piece_budget)
    usage.pieces.append(len(pieces))
    out = []
    for index, piece in enumerate(pieces, start=1):
        prompt = _TRANSLATE[target].format(text=piece)
        out.append(_chat(system, prompt, room - count_tokens(piece), usage))
        report(index, len(pieces), usage)
    return {
        "translation": "\n\n".join(out),
        "language": target,
        **usage.counts(),
        "engine": usage.engine(),
    }


_FIELDS_SYSTEM = "You read invoices and receipts. You answer with one JSON object and nothing else."
#: Short: the grammar already names the fields (and a small model's window is small).
_FIELDS = (
    "The invoice's fields as JSON, each value copied exactly from the text; leave out any field "
    "not printed.\n\n{text}"
)
#: Tokens the answer may take: nine short strings and their names (at most a quarter of the window).
_FIELDS_ANSWER_TOKENS = 320


def invoice_fields(text: str, on_progress: Progress | None = None) -> dict:
    """An invoice's or a receipt's fields as the model reads them from its text, each a string
    copied from the text, held to ``texts.MODEL_FIELDS_SCHEMA`` by a grammar. A long text is read
    from its start, as much as the context holds (the fields sit on the first page). These are a
    node's claims: the coordinator keeps only the values it finds printed in the text."""
    text = check_text(text)
    usage = Usage()
    report = on_progress or (lambda done, total, usage: None)
    answer_tokens = min(_FIELDS_ANSWER_TOKENS, get_model().n_ctx() // 4)
    room = _room(_FIELDS_SYSTEM, _FIELDS) - answer_tokens
    if room < 64:
        raise GridError("The model's context window is too small to read fields.", code=errors.LLM_FAILED)
    pieces = _split(text, room)
    usage.pieces.append(len(pieces))
    answer = _chat(
        _FIELDS_SYSTEM,
        _FIELDS.format(text=pieces[0]),
        answer_tokens,
        usage,
        schema=texts.MODEL_FIELDS_SCHEMA,
    )
    report(1, 1, usage)
    fields, complete = _parse_fields(answer)
    return {
        "fields": fields,
        # what two nodes' answers are compared by: the fields, in one canonical form
        "answer": json.dumps(fields, sort_keys=True, ensure_ascii=False),
        "complete": complete,
        "pieces_read": 1,
        **usage.counts(),
        "engine": usage.engine(),
    }


def _parse_fields(answer: str) -> tuple[dict[str, str], bool]:
    """The known fields of the model's answer that are non-empty strings of a sane length, and
    whether the answer was a whole JSON object (an answer cut by the token budget is not)."""
    try:
        parsed = json.loads(answer)
    except ValueError:
        return {}, False
    if not isinstance(parsed, dict):
        return {}, False
    fields = {
        name: value.strip()
        for name, value in parsed.items()
        if name in texts.MODEL_FIELDS
        and isinstance(value, str)
        and 0 < len(value.strip()) <= texts.MODEL_FIELD_MAX_CHARS
    }
    return fields, True


# --- the OpenAI-compatible API (docs/decisions/0018) ------------------------------------------

_embedder = None

Delta = Callable[[str], None]


def chat(
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    stop: list[str],
    on_delta: Delta | None = None,
) -> dict:
    """A chat completion of ``messages``, streamed: ``on_delta`` is given each piece of text as
    the model produces it. The counts are exact: the prompt's tokens as the model read them and
    every token it sampled (counted by a logits processor, called once per sampled token)."""
    from llama_cpp import LogitsProcessorList

    messages = chat_checks.check_messages(messages)
    max_tokens = chat_checks.check_max_tokens(max_tokens)
    temperature = chat_checks.check_temperature(temperature)
    stop = chat_checks.check_stop(stop)
    model = get_model()
    seen: list[int] = []

    def count(input_ids, scores):
        seen.append(len(input_ids))
        return scores

    began = time.perf_counter()
    try:
        chunks = model.create_chat_completion(
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop or None,
            stream=True,
            logits_processor=LogitsProcessorList([count]),
        )
        parts, finish = [], None
        for chunk in chunks:
            choice = chunk["choices"][0]
            piece = choice["delta"].get("content") or ""
            if piece:
                parts.append(piece)
                if on_delta is not None:
                    on_delta(piece)
            finish = choice.get("finish_reason") or finish
    except ValueError as exc:  # llama.cpp: "Requested tokens (…) exceed context window of …"
        raise chat_checks.ChatInvalid(
            f"The messages and max_tokens do not fit the model's context window of {model.n_ctx()} "
            f"tokens: {exc}",
            "messages",
            code=errors.CONTEXT_LENGTH_EXCEEDED,
        ) from None
    except MemoryError:
        raise TransientError("The worker ran out of memory while generating.") from None
    usage = Usage(
        prompt_tokens=seen[0] if seen else 0,
        completion_tokens=len(seen),
        calls=1,
        # the pieces handed to on_delta included: a put on a list (workers.stream), never a post
        seconds=time.perf_counter() - began,
    )
    return {
        "text": "".join(parts),
        "finish_reason": finish or "stop",
        **usage.counts(),
        "engine": usage.engine(),
    }


def get_embedder():
    """The process's model loaded for embeddings (mean-pooled), on first use."""
    global _embedder
    with _lock:
        if _embedder is None:
            import llama_cpp

            path = model_path()
            if not path.is_file():
                raise TransientError(
                    f"Model file {path} not found on this worker.", code=errors.ENGINE_UNAVAILABLE
                )
            _embedder = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=context_size(),
                n_threads=threads(),
                n_threads_batch=threads(),
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                verbose=False,
            )
            atexit.register(_close_embedder)
        return _embedder


def _close_embedder() -> None:
    global _embedder
    if _embedder is not None:
        _embedder.close()
        _embedder = None


def embeddings(inputs: list[str]) -> dict:
    """One vector per input (the model's embedding size), with the tokens read."""
    inputs = chat_checks.check_embedding_inputs(inputs)
    embedder = get_embedder()
    for index, text in enumerate(inputs):
        tokens = len(embedder.tokenize(text.encode("utf-8"), add_bos=True, special=False))
        if tokens > embedder.n_ctx():
            raise chat_checks.ChatInvalid(
                f"input[{index}] has {tokens} tokens; the model's context window is {embedder.n_ctx()}.",
                "input",
                code=errors.CONTEXT_LENGTH_EXCEEDED,
            )
    try:
        response = embedder.create_embedding(inputs)
    except MemoryError:
        raise TransientError("The worker ran out of memory while embedding.") from None
    vectors = [item["embedding"] for item in response["data"]]
    usage = Usage(prompt_tokens=response["usage"]["prompt_tokens"], calls=1)
    return {
        "vectors": vectors,
        "dimensions": len(vectors[0]) if vectors else 0,
        **usage.counts(),
        # Not describe(): that would load the model a second time, for generation.
        "engine": {
            "name": "llama.cpp",
            "model": model_path().name,
            "model_bytes": model_path().stat().st_size,
            "context": embedder.n_ctx(),
            "pid": os.getpid(),
        },
    }
