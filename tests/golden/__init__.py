"""Golden encoded examples: one file per event tag, so that a schema change fails a test.

Each ``<tag>.json`` holds one example event as MessagePack bytes (base64) and as JSON. The
contract test decodes the stored bytes and requires that they re-encode to the very same
bytes; a changed field type, a removed type or a new field all show up there.

``python -m tests.golden`` writes the files of tags that have none (a deterministic example
built from the field types). After a deliberate, backward-compatible change (a new field with
a default), ``python -m tests.golden --rewrite <tag>`` re-encodes that tag's stored example,
keeping its values. A field that must change type is a new ``.vN`` type, never a rewrite.
"""

from __future__ import annotations

import base64
import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import msgspec

from streams.base import Event
from streams.catalog import EVENT_TYPES_BY_TAG, decode_event_raw, encode_event, encode_event_json

__all__ = ["GOLDEN_DIR", "example_of", "golden_path", "read_golden", "record_of", "write_golden"]

GOLDEN_DIR = Path(__file__).resolve().parent

# Fixed values so that the example, and so the file, is the same on every run.
_EXAMPLE_JSON: dict[str, Any] = {
    "note": "golden",
    "count": 3,
    "ratio": 0.25,
    "ok": True,
    "missing": None,
    "nested": {"items": [1, "two", 3.5]},
}
_SCALAR_EXAMPLES: dict[object, Any] = {
    int: 7,
    float: 1.5,
    bool: True,
    Any: _EXAMPLE_JSON,
}


def _example_value(tp: Any, name: str) -> Any:
    if tp is str:
        return f"{name}-1"
    if tp in _SCALAR_EXAMPLES:
        return _SCALAR_EXAMPLES[tp]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return args[0]
    if origin in (Union, types.UnionType):
        # The first arm that carries a value, so the example exercises the field's real type.
        arm = next(a for a in args if a not in (type(None), msgspec.UnsetType))
        return _example_value(arm, name)
    if origin is dict:
        key, value = args
        if value is Any:
            return dict(_EXAMPLE_JSON)
        return {_example_value(key, "k"): _example_value(value, name)}
    if origin is list:
        return [_example_value(args[0], f"{name}-a"), _example_value(args[0], f"{name}-b")]
    raise TypeError(f"no golden example value for field type {tp!r} ({name})")


def example_of(cls: type[Event]) -> Event:
    """A deterministic instance of ``cls`` with every field set to a non-default value."""
    values = {f.name: _example_value(f.type, f.name) for f in msgspec.structs.fields(cls)}
    values["event_id"] = "0123456789abcdef0123456789abcdef"
    values["occurred_at"] = 1767225600.125
    return cls(**values)


def golden_path(tag: str) -> Path:
    return GOLDEN_DIR / f"{tag}.json"


def record_of(event: Event) -> dict[str, Any]:
    return {
        "tag": event.type_tag,
        "msgpack_b64": base64.b64encode(encode_event(event)).decode("ascii"),
        "json": json.loads(encode_event_json(event)),
    }


def read_golden(path: Path) -> tuple[str, bytes, dict[str, Any]]:
    """The tag, MessagePack bytes and JSON form stored in one golden file."""
    record = json.loads(path.read_text(encoding="utf-8"))
    return record["tag"], base64.b64decode(record["msgpack_b64"]), record["json"]


def write_golden(*, rewrite: tuple[str, ...] = ()) -> list[str]:
    """Write missing golden files, and re-encode the ``rewrite`` tags; return what changed."""
    unknown = set(rewrite) - set(EVENT_TYPES_BY_TAG)
    if unknown:
        raise SystemExit(f"unknown tags: {', '.join(sorted(unknown))}")
    written = []
    for tag, cls in sorted(EVENT_TYPES_BY_TAG.items()):
        path = golden_path(tag)
        if path.exists() and tag not in rewrite:
            continue
        event = decode_event_raw(read_golden(path)[1]) if path.exists() else example_of(cls)
        text = json.dumps(record_of(event), indent=2, sort_keys=True, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        written.append(tag)
    return written
