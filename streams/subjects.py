"""The subject taxonomy: where every event and request lives on NATS.

Events (stored in the ``MVS_EVENTS`` stream)::

    mvs.evt.<domain>.<key>        e.g. mvs.evt.memory.mem-1b2c..., mvs.evt.request.r-42

``<domain>`` is one of :data:`DOMAINS`; ``<key>`` is the entity the event is about (its
aggregate), escaped by :func:`token`. One subject per entity is what makes optimistic
concurrency per entity possible (``Nats-Expected-Last-Subject-Sequence``). Consumers filter
by domain (``mvs.evt.memory.>``) or take everything (``mvs.evt.>``), with ONE filter subject
each: a consumer that needs several domains takes everything and skips the rest itself
(:func:`consumer_domains`), because nats-server delivers a consumer with several filter
subjects at 1-2k messages/s once the stream holds many subjects (measured with 40k events
of per-entity subjects: 10k messages in 6-10 s with two filters, 0.1 s with one; see
nats-io/nats-server#4888 and #7014).

Work queue (``MVS_WORK``, AsyncProcessor): ``mvs.work.<priority>.<task_type>``; dead letters
(``MVS_DLQ``): ``mvs.dlq.<origin>``. Requests (not stored; NATS micro services):
``mvs.svc.<service>.<action>``.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "DLQ_PREFIX",
    "DOMAINS",
    "EVENTS_PREFIX",
    "SERVICE_PREFIX",
    "WORK_PREFIX",
    "consumer_domains",
    "consumer_filter",
    "domain_filter",
    "domain_of",
    "event_subject",
    "service_subject",
    "token",
    "untoken",
]

EVENTS_PREFIX = "mvs.evt"
WORK_PREFIX = "mvs.work"
DLQ_PREFIX = "mvs.dlq"
SERVICE_PREFIX = "mvs.svc"

DOMAINS = (
    "request",
    "model",
    "memory",
    "service",
    "twin",
    "flag",
    "breaker",
    "cache",
    "alert",
    "speech",
    "emotion",
    "translation",
    "learning",
    "metric",
    "legacy",
)

_SAFE = re.compile(r"[A-Za-z0-9_\-:@+=]+")
_MAX_TOKEN = 120
NO_KEY = "_"


def token(value: str) -> str:
    """Escape ``value`` into one subject token, reversibly while it is short.

    Characters outside ``[A-Za-z0-9_-:@+=]`` become ``%XX`` (UTF-8); a result longer than
    120 characters becomes ``%%`` plus a SHA-256 digest (the full key stays in the payload).
    The empty key is ``_``; a key that is itself ``_`` becomes ``%5F``.
    """
    if not value:
        return NO_KEY
    if value == NO_KEY:
        # A key that is literally "_" must not read back as the empty key.
        return "%5F"
    if _SAFE.fullmatch(value) and len(value) <= _MAX_TOKEN:
        return value
    out = []
    for ch in value:
        if _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    escaped = "".join(out)
    if len(escaped) <= _MAX_TOKEN:
        return escaped
    return "%%" + hashlib.sha256(value.encode("utf-8")).hexdigest()


def untoken(tok: str) -> str | None:
    """Reverse :func:`token`; ``None`` for a hashed (long) key."""
    if tok.startswith("%%"):
        return None
    if tok == NO_KEY:
        return ""
    data = bytearray()
    i = 0
    while i < len(tok):
        if tok[i] == "%":
            data.append(int(tok[i + 1 : i + 3], 16))
            i += 3
        else:
            data.extend(tok[i].encode())
            i += 1
    return data.decode("utf-8")


def event_subject(domain: str, key: str | None) -> str:
    return f"{EVENTS_PREFIX}.{domain}.{token(key or '')}"


def domain_filter(domain: str | None = None) -> str:
    """The filter subject for one domain's events, or all events."""
    return f"{EVENTS_PREFIX}.{domain}.>" if domain else f"{EVENTS_PREFIX}.>"


def domain_of(subject: str) -> str:
    """The ``<domain>`` of ``mvs.evt.<domain>.<key>`` (what follows the prefix, for others)."""
    start = len(EVENTS_PREFIX) + 1
    end = subject.find(".", start)
    return subject[start:end] if end > 0 else subject[start:]


def consumer_domains(subjects: tuple[str, ...] | list[str]) -> frozenset[str] | None:
    """The domains that event filters ``subjects`` select; None when they select every event.

    Each filter must be ``mvs.evt.>`` or ``mvs.evt.<domain>.>``: a consumer built from them
    takes one filter subject (``domain_filter`` of the one domain, or everything) and keeps
    the messages whose :func:`domain_of` is in the set (see the module docstring for why).
    Raises ``ValueError`` for any other filter.
    """
    everything = domain_filter()
    prefix = EVENTS_PREFIX + "."
    out = set()
    for subject in subjects:
        if subject == everything:
            return None
        tokens = subject.split(".")
        one_domain = len(tokens) == 4 and subject.startswith(prefix) and tokens[3] == ">"
        if not one_domain or "*" in subject:
            raise ValueError(
                f"subject filter {subject!r} is not {everything!r} or '{prefix}<domain>.>'"
            )
        out.add(tokens[2])
    return frozenset(out)


def consumer_filter(domains: frozenset[str] | set[str] | None) -> str:
    """The one filter subject of a consumer of ``domains`` (None: every domain): the domain's
    own for one, everything for several (the consumer skips the others itself)."""
    if domains is None or len(domains) != 1:
        return domain_filter()
    return domain_filter(next(iter(domains)))


def service_subject(service: str, action: str) -> str:
    return f"{SERVICE_PREFIX}.{service}.{action}"
