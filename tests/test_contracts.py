"""The laws of the event contracts: codecs, tolerance, upcasting, errors, subjects, goldens."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import defaultdict
from typing import Any

import msgspec
import pytest
from golden import GOLDEN_DIR, example_of, golden_path, read_golden
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import any_event, event_of, json_values, short_text

from mvs.errors import DecodeError
from streams.base import Event
from streams.catalog import (
    ALL_EVENTS,
    EVENT_TYPES_BY_TAG,
    decode_event,
    decode_event_raw,
    encode_event,
    encode_event_json,
    subject_of,
)
from streams.subjects import DOMAINS, EVENTS_PREFIX, token, untoken
from streams.upcasters import UPCASTERS, upcast

# Modest counts: every test is parametrised over all event types already.
per_type = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
overall = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

by_tag = pytest.mark.parametrize(
    "cls", ALL_EVENTS, ids=lambda cls: str(cls.__struct_config__.tag)
)


def _tag(cls: type[Event]) -> str:
    return str(cls.__struct_config__.tag)


def _versions() -> dict[str, list[tuple[int, type[Event]]]]:
    """Event types grouped by tag stem (``service.health``), sorted by version number."""
    stems: dict[str, list[tuple[int, type[Event]]]] = defaultdict(list)
    for tag, cls in EVENT_TYPES_BY_TAG.items():
        match = re.fullmatch(r"(.+)\.v(\d+)", tag)
        assert match, f"tag {tag!r} does not end in .v<N>"
        stems[match[1]].append((int(match[2]), cls))
    return {stem: sorted(found, key=lambda v: v[0]) for stem, found in stems.items()}


VERSIONS = _versions()
OLD_TYPES = [cls for found in VERSIONS.values() for _, cls in found[:-1]]
CURRENT = {cls: found[-1][1] for found in VERSIONS.values() for _, cls in found}
VERSION_OF = {cls: n for found in VERSIONS.values() for n, cls in found}


# Codecs


@by_tag
@per_type
@given(data=st.data())
def test_every_event_type_round_trips_through_msgpack_and_json(
    cls: type[Event], data: st.DataObject
) -> None:
    event = data.draw(event_of(cls))
    packed, text = encode_event(event), encode_event_json(event)
    # The codec tells the formats apart by the first byte; both sides must keep to it.
    assert packed[0] >= 0x80
    assert text[:1] == b"{"
    assert decode_event_raw(packed) == event
    assert decode_event_raw(text) == event
    assert type(decode_event_raw(packed)) is cls


@by_tag
@per_type
@given(data=st.data())
def test_decode_event_upcasts_only_old_versions(cls: type[Event], data: st.DataObject) -> None:
    event = data.draw(event_of(cls))
    decoded = decode_event(encode_event(event))
    assert type(decoded) is CURRENT[cls]
    if cls is CURRENT[cls]:
        assert decoded == event
    else:
        assert decoded == upcast(event)
        assert decoded.event_id == event.event_id


@by_tag
@per_type
@given(data=st.data())
def test_a_reader_tolerates_fields_it_does_not_know(cls: type[Event], data: st.DataObject) -> None:
    event = data.draw(event_of(cls))
    known = {f.encode_name for f in msgspec.structs.fields(cls)} | {"type"}
    extra = data.draw(
        st.dictionaries(short_text.filter(lambda k: k not in known), json_values, max_size=4)
    )
    newer = {**msgspec.to_builtins(event), **extra}
    assert decode_event_raw(msgspec.msgpack.encode(newer)) == event
    assert decode_event_raw(msgspec.json.encode(newer)) == event


def test_hand_written_json_with_leading_whitespace_decodes() -> None:
    payload = b'\n  {"type": "memory.accessed.v1", "memory_id": "m1"}\n'
    event = decode_event(payload)
    assert event.type_tag == "memory.accessed.v1"
    assert event.key() == "m1"


# Upcasting


def test_every_old_version_has_an_upcaster_and_current_versions_have_none() -> None:
    assert set(UPCASTERS) == set(OLD_TYPES), (
        "each tag with a newer .vN needs exactly one upcaster, current versions none"
    )


@pytest.mark.parametrize("old", OLD_TYPES, ids=_tag)
@per_type
@given(data=st.data())
def test_every_old_version_upcasts_to_a_current_event_that_round_trips(
    old: type[Event], data: st.DataObject
) -> None:
    event = data.draw(event_of(old))
    # One step moves to a strictly newer version of the same stem.
    step = UPCASTERS[old](event)
    assert CURRENT[type(step)] is CURRENT[old]
    assert VERSION_OF[type(step)] > VERSION_OF[old]
    current = upcast(event)
    assert type(current) is CURRENT[old]
    for field in ("event_id", "occurred_at", "source", "correlation_id"):
        assert getattr(current, field) == getattr(event, field)
    assert decode_event_raw(encode_event(current)) == current
    assert decode_event(encode_event(event)) == current


# Errors


def _assert_decode_error(payload: bytes, *needles: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event(payload)
    for needle in needles:
        assert needle in str(caught.value), f"{needle!r} not in {caught.value}"


def test_an_unknown_tag_is_a_decode_error_naming_the_tag() -> None:
    unknown = b'{"type": "memory.forgotten.v9", "memory_id": "m"}'
    _assert_decode_error(unknown, "memory.forgotten.v9")
    _assert_decode_error(
        msgspec.msgpack.encode({"type": "memory.forgotten.v9", "memory_id": "m"}),
        "memory.forgotten.v9",
    )


def test_a_missing_tag_or_required_field_is_a_decode_error_naming_it() -> None:
    _assert_decode_error(b'{"memory_id": "m"}', "`type`")
    _assert_decode_error(b'{"type": "memory.written.v1", "memory_id": "m"}', "`content`")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"[]",
        b'"memory.written.v1"',
        b"\xc1",
        b"\x81\xa4type\xa4\xff\xfe\xfd\xfc",  # MessagePack string that is not UTF-8
        b'{"type": "memory.written.v1", "memory_id": "m", "content": "c", "metadata": {"a": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}}",
        b'{"type": "memory.written.v1", "memory_id": "m", "content": "c", "access_count": '
        + b"9" * 30
        + b"}",
        msgspec.msgpack.encode(
            {
                "type": "memory.written.v1",
                "memory_id": "m",
                "content": "c",
                "metadata": {"a": msgspec.msgpack.Ext(5, b"x")},
            }
        ),
    ],
    ids=[
        "empty",
        "truncated-json",
        "json-array",
        "json-string",
        "bad-msgpack-opcode",
        "non-utf8",
        "deep-nesting",
        "int-beyond-64-bits",
        "msgpack-ext",
    ],
)
def test_a_malformed_payload_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError, match=r"MVS event|event payload"):
        decode_event(payload)


_WRONG_VALUES: tuple[Any, ...] = ([1, 2], "text", 12345, {"a": [1]}, True, None)


def _wrong_value_for(tp: Any) -> Any:
    for value in _WRONG_VALUES:
        try:
            msgspec.json.decode(msgspec.json.encode(value), type=tp)
        except msgspec.ValidationError:
            return value
    return msgspec.UNSET  # the field takes anything (``Any``)


@by_tag
def test_a_field_of_the_wrong_type_is_a_decode_error_naming_the_field(cls: type[Event]) -> None:
    good = msgspec.to_builtins(example_of(cls))
    checked = 0
    for field in msgspec.structs.fields(cls):
        wrong = _wrong_value_for(field.type)
        if wrong is msgspec.UNSET:
            continue
        bad = {**good, field.encode_name: wrong}
        for payload in (msgspec.msgpack.encode(bad), msgspec.json.encode(bad)):
            _assert_decode_error(payload, f"$.{field.encode_name}")
        checked += 1
    assert checked, f"{cls.__name__} has no typed field"


@overall
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_decode_error(payload: bytes) -> None:
    # Any outcome but another exception type: a consumer catches DecodeError and goes on.
    with contextlib.suppress(DecodeError):
        assert isinstance(decode_event(payload), Event)


@overall
@given(
    tag=st.sampled_from(sorted(EVENT_TYPES_BY_TAG)),
    body=st.dictionaries(short_text, json_values, max_size=6),
    as_json=st.booleans(),
)
def test_any_json_like_object_with_a_real_tag_decodes_or_raises_decode_error(
    tag: str, body: dict[str, Any], as_json: bool
) -> None:
    obj = {**body, "type": tag}
    payload = msgspec.json.encode(obj) if as_json else msgspec.msgpack.encode(obj)
    with contextlib.suppress(DecodeError):
        assert decode_event(payload).type_tag.rsplit(".v", 1)[0] == tag.rsplit(".v", 1)[0]


# Subjects


@overall
@given(st.text(max_size=60))
def test_token_never_breaks_a_subject_and_reads_back_unless_hashed(value: str) -> None:
    tok = token(value)
    assert tok
    assert not re.search(r"[.*>\s]", tok)
    if tok.startswith("%%"):
        assert untoken(tok) is None
        assert tok == "%%" + hashlib.sha256(value.encode()).hexdigest()
    else:
        assert untoken(tok) == value


@overall
@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40))
def test_token_round_trips_short_ascii_strings(value: str) -> None:
    # At most three characters per escaped ASCII character: 40 always fit in one token.
    assert untoken(token(value)) == value


def test_token_of_a_long_key_is_a_stable_digest() -> None:
    value = "k" * 200
    assert token(value) == "%%" + hashlib.sha256(value.encode()).hexdigest()
    assert untoken(token(value)) is None
    assert token("") != token("_")


@by_tag
def test_every_event_type_has_a_known_domain_and_a_real_key_field(cls: type[Event]) -> None:
    assert cls.domain in DOMAINS
    names = {f.name: f for f in msgspec.structs.fields(cls)}
    assert cls.key_field in names, f"{cls.__name__}.key_field names no field"
    assert isinstance(example_of(cls).key(), str)


@overall
@given(any_event)
def test_subject_of_an_event_is_one_token_under_its_domain(event: Event) -> None:
    subject = subject_of(event)
    prefix = f"{EVENTS_PREFIX}.{type(event).domain}."
    assert subject.startswith(prefix)
    last = subject[len(prefix) :]
    assert last and "." not in last and not re.search(r"[*>\s]", last)
    key = event.key() or ""
    assert untoken(last) in (key, None)


# Golden examples


def test_every_tag_has_a_golden_file_and_every_golden_file_a_tag() -> None:
    stored = {p.name.removesuffix(".json") for p in GOLDEN_DIR.glob("*.json")}
    missing = sorted(set(EVENT_TYPES_BY_TAG) - stored)
    orphans = sorted(stored - set(EVENT_TYPES_BY_TAG))
    assert not missing, f"no golden example for {missing}: run `python -m tests.golden`"
    assert not orphans, (
        f"golden examples for tags that no longer exist: {orphans}; stored events of a "
        "removed type can no longer be read"
    )


@by_tag
def test_golden_example_still_decodes_and_encodes_to_the_same_bytes(cls: type[Event]) -> None:
    tag = _tag(cls)
    path = golden_path(tag)
    if not path.exists():
        pytest.fail(f"no golden example for {tag}: run `python -m tests.golden`")
    stored_tag, packed, as_json = read_golden(path)
    assert stored_tag == tag
    event = decode_event_raw(packed)
    assert type(event) is cls
    hint = (
        f"the encoding of {tag} changed. If the change is deliberate and backward compatible "
        f"(a new field with a default), run `python -m tests.golden --rewrite {tag}`; a field "
        "that changes type needs a new .vN type and an upcaster instead"
    )
    assert encode_event(event) == packed, hint
    assert json.loads(encode_event_json(event)) == as_json, hint
    assert decode_event_raw(json.dumps(as_json).encode()) == event


def test_every_domain_is_documented_in_the_subject_taxonomy() -> None:
    doc = (GOLDEN_DIR.parents[1] / "docs" / "subjects.md").read_text(encoding="utf-8")
    undocumented = [d for d in DOMAINS if f"| `{d}`" not in doc]
    assert not undocumented, f"docs/subjects.md does not describe domains {undocumented}"
