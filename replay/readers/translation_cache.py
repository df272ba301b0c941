"""L5: the translation cache ``translation_cache.json``.

Keys are the Python repr of ``[text, source_lang, target_lang]``; they are parsed with
:func:`ast.literal_eval` (never ``eval``) and kept verbatim as the ``cache_key``. Values are
``[translation, epoch_seconds, engine]``; language codes are kept as written (``en``/``tl``
next to NLLB codes such as ``tgl_Latn``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from replay.model import BadValue, Record, event_id, reject, to_text, to_time
from replay.readers.jsonfile import load_json, peek_json
from streams.events.language import TranslationRecorded

__all__ = ["READER", "parse_key"]


def parse_key(key: str) -> tuple[str, str, str]:
    try:
        parsed = ast.literal_eval(key)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise BadValue("key is not a Python list literal [text, source, target]") from None
    if not isinstance(parsed, list | tuple) or len(parsed) != 3:
        raise BadValue("key is not a list of three items [text, source, target]")
    text, src, dst = parsed
    return to_text(text), to_text(src), to_text(dst)


class TranslationCacheReader:
    format = "L5"
    name = "translation-cache"

    def detect(self, path: Path) -> bool:
        data = peek_json(path)
        if not isinstance(data, dict) or not data:
            return False
        return sum(1 for k in data if k.lstrip().startswith(("[", "("))) * 2 >= len(data)

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        data = load_json(path)
        source = f"legacy:L5:{path.name}"
        mtime = path.stat().st_mtime
        for i, (key, value) in enumerate(data.items()):
            if i < skip:
                continue
            try:
                yield _entry(source, mtime, key, value)
            except BadValue as exc:
                yield reject("L5", path, f"{path.name}:key={key}", str(exc), {key: value})


def _entry(source: str, mtime: float, key: str, value: Any) -> Record:
    text, src, dst = parse_key(key)
    if not isinstance(value, list) or not value:
        raise BadValue("value is not a list [translation, time, engine]")
    translation = value[0]
    if not isinstance(translation, str):
        raise BadValue(f"translation is a {type(translation).__name__}, not text")
    at = to_time(value[1], "time") if len(value) > 1 else None
    engine = to_text(value[2]) if len(value) > 2 else ""
    ev = TranslationRecorded(
        event_id=event_id("L5", "translation", key, value),
        occurred_at=at if at is not None else mtime,
        source=source,
        cache_key=key,
        text=text,
        source_lang=src,
        target_lang=dst,
        translation=translation,
        engine=engine,
        translated_at=at,
    )
    return Record(events=(ev,), entity="translations", at=at)


READER = TranslationCacheReader()
