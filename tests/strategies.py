"""Hypothesis strategies for MVS events, derived from the Struct types themselves.

A strategy is built from each event type's field types (``msgspec.structs.fields``), so a
new event type or field is covered without touching this module; a field type it does not
know fails loudly (:func:`for_type`) instead of being skipped.

Values stay inside what both codecs carry exactly: floats are finite (JSON has no NaN or
infinity), integers fit in 64 bits (MessagePack's range), free-form ``Any`` fields hold
JSON-like values.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

import msgspec
from hypothesis import strategies as st

from streams.base import Event
from streams.catalog import ALL_EVENTS

__all__ = [
    "any_event",
    "event_of",
    "finite_floats",
    "for_type",
    "int64s",
    "json_values",
    "short_text",
]

short_text = st.text(max_size=24)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), int64s, finite_floats, short_text
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(short_text, children, max_size=4)
    ),
    max_leaves=12,
)

_SCALARS: dict[object, st.SearchStrategy[Any]] = {
    str: short_text,
    bool: st.booleans(),
    int: int64s,
    float: finite_floats,
    type(None): st.none(),
    msgspec.UnsetType: st.just(msgspec.UNSET),
    Any: json_values,
}


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of the field type ``tp`` (as msgspec resolved it)."""
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, types.UnionType):
        return st.one_of(*(for_type(arm) for arm in args))
    if origin is dict:
        key, value = args
        return st.dictionaries(for_type(key), for_type(value), max_size=4)
    if origin is list:
        return st.lists(for_type(args[0]), max_size=4)
    raise TypeError(f"no strategy for field type {tp!r}: teach tests/strategies.py about it")


_BY_TYPE: dict[type[Event], st.SearchStrategy[Event]] = {}


def event_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Any valid instance of ``cls``; fields with defaults are sometimes left to them."""
    if cls not in _BY_TYPE:
        required: dict[str, st.SearchStrategy[Any]] = {}
        optional: dict[str, st.SearchStrategy[Any]] = {}
        for f in msgspec.structs.fields(cls):
            (required if f.required else optional)[f.name] = for_type(f.type)
        _BY_TYPE[cls] = st.fixed_dictionaries(required, optional=optional).map(
            lambda kwargs: cls(**kwargs)
        )
    return _BY_TYPE[cls]


any_event: st.SearchStrategy[Event] = st.sampled_from(ALL_EVENTS).flatmap(event_of)
