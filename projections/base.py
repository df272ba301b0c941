"""The fold engine shared by every projection: decoded items in, set-based DuckDB writes out.

A projection declares *handlers* per event type. An append handler turns one event into one
row of a history table. A merge handler folds one event into the current row of a keyed table
(``state -> new state``, or :data:`DELETE`). For a batch, the engine

1. loads the current rows of every key the batch touches with one semi-join per table,
2. folds the events in stream order in Python (so write-then-update-then-delete of one key
   in one batch nets out correctly),
3. writes the net effect with one ``DELETE ... USING`` and one ``INSERT ... BY NAME`` from an
   Arrow table per table, and the appended rows with one Arrow insert per table.

Nothing is written row by row. A handler raises :class:`Invalid` to refuse an event; the event
then has no effect on any table and goes to ``dead_letters``.
"""

from __future__ import annotations

import bisect
import operator
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import duckdb
import msgspec
import numpy as np
import pyarrow as pa

from projections.keyfilter import KeyFilter, id_hashes
from streams.base import Event

__all__ = [
    "DELETE",
    "Append",
    "FoldContext",
    "Invalid",
    "Item",
    "ItemsAt",
    "Key",
    "Merge",
    "Prepared",
    "Projection",
    "Row",
    "arrow_schema",
    "arrow_table",
    "at_seq",
    "checksum",
    "dumps",
    "insert_arrow",
    "insert_columns",
    "insert_rows",
    "items_by_seq",
]

_sorted_json = msgspec.json.Encoder(order="sorted")


def dumps(value: Any) -> str:
    """JSON text for a JSON column (sorted keys, so equal values give equal text)."""
    if value == {} or value == []:  # the common case, without an encoder call
        return "{}" if isinstance(value, dict) else "[]"
    return _sorted_json.encode(value).decode()


class Invalid(Exception):
    """A handler refuses an event; the reason goes to ``dead_letters``."""


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE: Any = _Delete()


class Item(NamedTuple):
    """One decoded stream message.

    A NamedTuple rather than a frozen dataclass: one is built per event per projection, and a
    frozen dataclass's ``__init__`` (``object.__setattr__`` per field) cost ~3 us of that.
    """

    seq: int
    subject: str
    event: Event
    raw: bytes


# the items of the given stream sequences of the share being folded (see fold_prepared)
ItemsAt = Callable[[Sequence[int]], list[Item]]


class _HasSeq(Protocol):
    @property
    def seq(self) -> int: ...


# anything with a stream sequence (a RawMessage, an Item)
_Seqd = TypeVar("_Seqd", bound=_HasSeq)
_seq_of = operator.attrgetter("seq")


def at_seq(rows: Sequence[_Seqd], seq: int) -> _Seqd:
    """The row of stream sequence ``seq`` among ``rows`` (messages or items, in stream
    order, as a share is); ValueError if there is none."""
    i = bisect.bisect_left(rows, seq, key=_seq_of)
    if i == len(rows) or rows[i].seq != seq:
        raise ValueError(f"no event of seq {seq} in the share (it must be in stream order)")
    return rows[i]


def items_by_seq(items: list[Item]) -> ItemsAt:
    """``items_at`` over decoded items."""
    return lambda seqs: [at_seq(items, seq) for seq in seqs]


Row = dict[str, Any]
Key = tuple[Any, ...]


class Prepared(NamedTuple):
    """A share of a batch laid out by :meth:`Projection.prepare`, ready to fold.

    Made where the batch is received, which may be another process (``projections.intake``):
    Arrow arrays and tables, so it pickles cheaply. ``ids`` holds the event id of each
    message of the share, in order, and ``hashes`` their hashes as the runner's filter of
    applied ids holds them (:func:`~projections.keyfilter.id_hashes`), for its duplicate
    check; both are empty for a projection that keeps duplicates.
    """

    ids: pa.Array
    hashes: np.ndarray
    tables: dict[str, pa.Table]

    @staticmethod
    def make(ids: list[str], tables: dict[str, pa.Table]) -> Prepared:
        """The share of the events ``ids`` laid out as ``tables`` (hashing the ids here
        spares the writer that work: measured, ~0.2 s per 1M events)."""
        column = pa.array(ids, pa.string())
        return Prepared(column, id_hashes(column), tables)

    @staticmethod
    def combine(parts: list[Prepared]) -> Prepared:
        """Consecutive shares as one (their tables concatenated, in order)."""
        if len(parts) == 1:
            return parts[0]
        names = parts[0].tables.keys()
        return Prepared(
            pa.concat_arrays([p.ids for p in parts]),
            np.concatenate([p.hashes for p in parts]),
            {n: pa.concat_tables([p.tables[n] for p in parts]) for n in names},
        )


@dataclass(frozen=True)
class Append:
    """Append ``row(item)`` to ``table`` (``None`` appends nothing)."""

    table: str
    row: Callable[[Item], Row | None]


@dataclass(frozen=True)
class Merge:
    """Fold an event into the row ``key(item)`` of ``table``.

    ``apply(state, item, ctx)`` gets the current row (``None`` when absent) and returns the new
    row (a new dict, never the mutated argument), the same object for "no change", or
    :data:`DELETE`. ``ctx`` gives read access to other tables' current rows in this batch.
    """

    table: str
    key: Callable[[Item], Key]
    apply: Callable[[Row | None, Item, FoldContext], Any]


@dataclass
class FoldContext:
    """The rows of keyed tables as they stand at the current event of the batch."""

    state: dict[str, dict[Key, Row | None]] = field(default_factory=dict)
    before: dict[str, dict[Key, Row | None]] = field(default_factory=dict)

    def get(self, table: str, key: Key) -> Row | None:
        return self.state.get(table, {}).get(key)


_arrow_schemas: dict[tuple[int, str], pa.Schema] = {}

_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "UBIGINT": pa.uint64(),
    "BOOLEAN": pa.bool_(),
    "BLOB": pa.binary(),
    "FLOAT[]": pa.list_(pa.float32()),
    "VARCHAR[]": pa.list_(pa.string()),
}


def arrow_schema(con: duckdb.DuckDBPyConnection, table: str) -> pa.Schema:
    """The Arrow schema of DuckDB ``table``'s columns (looked up once per connection)."""
    cache_key = (id(con), table)
    schema = _arrow_schemas.get(cache_key)
    if schema is None:
        cols = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = current_schema() ORDER BY ordinal_position",
            [table],
        ).fetchall()
        schema = pa.schema([(name, _TYPES[dtype]) for name, dtype in cols])
        _arrow_schemas[cache_key] = schema
    return schema


def arrow_table(
    con: duckdb.DuckDBPyConnection, table: str, rows: list[Row]
) -> pa.Table:
    """An Arrow table with the column types of DuckDB ``table`` built from dict rows."""
    schema = arrow_schema(con, table)
    # from_pydict over per-column lists is ~3x faster than from_pylist over dict rows. The
    # values are taken row by row and transposed: column by column walks every row dict once
    # per column, which on a fold's 10k rows (~12 MB of dicts) missed the caches (measured
    # 3.1 against 2.2 us per memory row).
    names = schema.names
    if not rows:
        return schema.empty_table()
    values = [tuple(map(r.get, names)) for r in rows]
    columns = dict(zip(names, map(list, zip(*values, strict=True)), strict=True))
    return pa.Table.from_pydict(columns, schema=schema)


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[Row]) -> None:
    if rows:
        insert_arrow(con, table, arrow_table(con, table, rows))


def insert_columns(
    con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, list[Any]]
) -> None:
    """Insert rows given column by column (every column of ``table``, in any order)."""
    schema = arrow_schema(con, table)
    insert_arrow(con, table, pa.Table.from_pydict(columns, schema=schema))


def insert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    if not data.num_rows:
        return
    con.register("_mvs_rows", data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _mvs_rows")
    finally:
        con.unregister("_mvs_rows")


def _keys_table(key_cols: tuple[str, ...], keys: Iterable[Key]) -> pa.Table:
    keys = list(keys)
    return pa.table({c: [k[i] for k in keys] for i, c in enumerate(key_cols)})


# Up to this many keys of a one-column key are looked up through the table's ART index
# (``col IN (?, ...)``: measured ~1-7 ms at 1M rows) instead of a join, which scans the
# key column (~45 ms at 1M rows, whatever the number of keys).
INDEX_LOOKUP_MAX = 64


def by_index(key_cols: tuple[str, ...], keys: list[Key]) -> tuple[str, list[Any]] | None:
    """A ``WHERE`` condition and its values that find ``keys`` by index, if that pays."""
    if len(key_cols) != 1 or not 0 < len(keys) <= INDEX_LOOKUP_MAX:
        return None
    return f"{key_cols[0]} IN ({', '.join('?' * len(keys))})", [k[0] for k in keys]


def _on(key_cols: tuple[str, ...]) -> str:
    return " AND ".join(f"t.{c} = k.{c}" for c in key_cols)


class Projection:
    """A named fold of some event subjects into some tables of the DuckDB file.

    ``suffix`` renames every owned table (``memories`` -> ``memories__rebuild``) so that a
    rebuild can fold into fresh tables beside the live ones.
    """

    name: ClassVar[str]
    subjects: ClassVar[tuple[str, ...]]
    schema_file: ClassVar[str]
    # keyed tables and their key columns; other owned tables are append-only
    keys: ClassVar[dict[str, tuple[str, ...]]] = {}
    tables: ClassVar[tuple[str, ...]]
    handlers: ClassVar[dict[type[Event], tuple[Append | Merge, ...]]] = {}
    # Duplicated events (same event_id, different stream sequence) are dropped: see runner.
    dedup: ClassVar[bool] = True
    # Keyed tables that grow with the log (one row per memory, per request): a KeyFilter
    # says which keys of a batch are new, so they are neither looked up nor deleted.
    filtered: ClassVar[tuple[str, ...]] = ()
    # Whether the fold splits into a stateless :meth:`prepare` (decoded items to Arrow
    # tables, no DuckDB) and :meth:`fold_prepared`: the intake process then does the first.
    prepares: ClassVar[bool] = False

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self.filters = {table: KeyFilter(self.keys[table]) for table in self.filtered}

    def reset_filters(self) -> None:
        """The tables may have changed under this fold (a rebuild swapped them in)."""
        for f in self.filters.values():
            f.reset()

    @property
    def position_name(self) -> str:
        return self.name + self.suffix

    @property
    def applied_table(self) -> str:
        return f"applied_{self.name}{self.suffix}"

    def t(self, table: str) -> str:
        return table + self.suffix

    def owned_tables(self) -> tuple[str, ...]:
        extra = (f"applied_{self.name}",) if self.dedup else ()
        return (*self.tables, *extra)

    def schema_statements(self) -> list[str]:
        """The DDL of the owned tables (views only for the live, unsuffixed tables)."""
        text = resources.files("projections").joinpath(self.schema_file).read_text()
        out = []
        for stmt in (s.strip() for s in text.split(";")):
            body = "\n".join(ln for ln in stmt.splitlines() if not ln.strip().startswith("--"))
            if not body.strip():
                continue
            if self.suffix and re.match(r"\s*CREATE\s+(OR\s+REPLACE\s+)?VIEW", body, re.I):
                continue
            for table in self.owned_tables():
                body = re.sub(rf"\b{table}\b", table + self.suffix, body)
            out.append(body)
        if self.dedup:
            out.append(
                f"CREATE TABLE IF NOT EXISTS {self.applied_table} "
                "(event_id VARCHAR NOT NULL USING COMPRESSION zstd, seq UBIGINT NOT NULL)"
            )
        return out

    def create_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        for stmt in self.schema_statements():
            con.execute(stmt)

    def fold(self, con: duckdb.DuckDBPyConnection, items: list[Item]) -> list[tuple[Item, str]]:
        """Apply ``items`` (in stream order) inside the caller's transaction.

        Returns the refused items with their reasons.
        """
        handlers = self.handlers
        # 1. every key each keyed table needs, in the order the batch first names them (rows
        # are then built, copied and written in that order: walking 10k row dicts in hash
        # order instead missed the CPU caches and cost ~2x in building the Arrow columns)
        wanted: dict[str, dict[Key, None]] = {}
        for item in items:
            for h in handlers.get(type(item.event), ()):
                if isinstance(h, Merge):
                    wanted.setdefault(h.table, {})[h.key(item)] = None
                    for table, key in self.reads(item):
                        wanted.setdefault(table, {})[key] = None
        ctx = FoldContext()
        fresh: dict[str, tuple[list[Key], np.ndarray]] = {}
        for table, keys in wanted.items():
            ctx.state[table], fresh[table] = self._load_filtered(con, table, keys)
            ctx.before[table] = dict(ctx.state[table])
        # 2. fold in order
        appends: dict[str, list[Row]] = {}
        refused: list[tuple[Item, str]] = []
        for item in items:
            effects: list[tuple[Append | Merge, Any]] = []
            undo: list[tuple[str, Key, Row | None]] = []
            try:
                for h in handlers.get(type(item.event), ()):
                    if isinstance(h, Append):
                        effects.append((h, h.row(item)))
                        continue
                    key = h.key(item)
                    old = ctx.state[h.table].get(key)
                    new = h.apply(old, item, ctx)
                    if new is old:
                        continue
                    if new is not DELETE:
                        new["last_seq"] = item.seq
                    undo.append((h.table, key, old))
                    # visible to later handlers of the same event; undone if it is refused
                    ctx.state[h.table][key] = None if new is DELETE else new
            except Invalid as exc:
                for table, key, old in reversed(undo):
                    ctx.state[table][key] = old
                refused.append((item, str(exc)))
                continue
            for h, row in effects:
                if row is not None:
                    row["last_seq"] = item.seq
                    appends.setdefault(h.table, []).append(row)
        # 3. write the net effect
        for table, states in ctx.state.items():
            before = ctx.before[table]
            changed = {k: v for k, v in states.items() if v is not before.get(k)}
            if not changed:
                continue
            self._write(con, table, changed, before)
        for table, f in self.filters.items():
            if table in fresh:
                # keys read but never written stay out of the table, and of the filter
                new_keys, hashes = fresh[table]
                states = ctx.state[table]
                kept = np.fromiter(
                    (states[k] is not None for k in new_keys), bool, len(new_keys)
                )
                f.add(hashes[kept])
        for table, rows in appends.items():
            insert_rows(con, self.t(table), rows)
        self.after_fold(con, ctx)
        return refused

    def prepare(self, items: list[Item]) -> dict[str, pa.Table]:
        """The Arrow tables :meth:`fold_prepared` folds (only when :attr:`prepares`).

        Stateless and without DuckDB: it may run in the intake process. ``fold(con, items)``
        of such a projection is ``fold_prepared(con, prepare(items), <items by seq>)``.
        """
        raise NotImplementedError(f"projection {self.name} has no prepare step")

    def fold_prepared(
        self, con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], items_at: ItemsAt
    ) -> list[tuple[Item, str]]:
        """Fold what :meth:`prepare` laid out, inside the caller's transaction; the refused
        items with their reasons, as :meth:`fold`. ``items_at(seqs)`` gives the items of
        those stream sequences (decoded on demand), for events the layout left to fold one
        by one or refuses."""
        raise NotImplementedError(f"projection {self.name} has no prepare step")

    def reads(self, item: Item) -> Iterable[tuple[str, Key]]:
        """Extra rows (table, key) a handler of ``item`` reads through ``ctx.get``."""
        return ()

    def after_fold(self, con: duckdb.DuckDBPyConnection, ctx: FoldContext) -> None:
        """Set-based follow-ups after a batch (e.g. derived counts)."""

    def _load_filtered(
        self, con: duckdb.DuckDBPyConnection, table: str, keys: Collection[Key]
    ) -> tuple[dict[Key, Row | None], tuple[list[Key], np.ndarray]]:
        """The current rows of ``keys`` (None: absent), and the new keys with their hashes."""
        f = self.filters.get(table)
        if f is None:
            return self._load(con, table, keys), ([], np.empty(0, dtype=np.uint64))
        if not f.loaded:
            f.load(con, self.t(table))
        ordered = list(keys)
        hashes = f.hashes(con, ordered)
        maybe = f.maybe(hashes)
        flags = maybe.tolist()
        new = [k for k, m in zip(ordered, flags, strict=True) if not m]
        if not new:
            return self._load(con, table, keys), (new, hashes[~maybe])
        state: dict[Key, Row | None] = dict.fromkeys(keys)
        known = [k for k, m in zip(ordered, flags, strict=True) if m]
        if known:
            state.update(self._load(con, table, known))
        return state, (new, hashes[~maybe])

    def _load(
        self, con: duckdb.DuckDBPyConnection, table: str, keys: Collection[Key]
    ) -> dict[Key, Row | None]:
        key_cols = self.keys[table]
        indexed = by_index(key_cols, list(keys))
        if indexed is not None:
            cur = con.execute(f"SELECT * FROM {self.t(table)} WHERE {indexed[0]}", indexed[1])
            names = [d[0] for d in cur.description or ()]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        else:
            con.register("_mvs_keys", _keys_table(key_cols, keys))
            try:
                rel = con.sql(
                    f"SELECT t.* FROM {self.t(table)} t SEMI JOIN _mvs_keys k ON {_on(key_cols)}"
                )
                names = rel.columns
                rows = [dict(zip(names, r, strict=True)) for r in rel.fetchall()]
            finally:
                con.unregister("_mvs_keys")
        state: dict[Key, Row | None] = dict.fromkeys(keys)
        for row in rows:
            state[tuple(row[c] for c in key_cols)] = row
        return state

    def _write(
        self, con: duckdb.DuckDBPyConnection, table: str, changed: dict[Key, Row | None],
        before: dict[Key, Row | None],
    ) -> None:
        # only a row that was there needs deleting (a new key has none: no scan for it)
        self._delete(con, table, [k for k in changed if before.get(k) is not None])
        insert_rows(con, self.t(table), [r for r in changed.values() if r is not None])

    def _delete(self, con: duckdb.DuckDBPyConnection, table: str, keys: list[Key]) -> None:
        """Delete the rows of ``keys`` from ``table`` (by index when there are few)."""
        if not keys:
            return
        key_cols = self.keys[table]
        name = self.t(table)
        indexed = by_index(key_cols, keys)
        if indexed is not None:
            con.execute(f"DELETE FROM {name} WHERE {indexed[0]}", indexed[1])
            return
        con.register("_mvs_keys", _keys_table(key_cols, keys))
        try:
            con.execute(f"DELETE FROM {name} t USING _mvs_keys k WHERE {_on(key_cols)}")
        finally:
            con.unregister("_mvs_keys")


def checksum(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int]:
    """(row count, order-independent sum of row hashes) of ``table``."""
    row = con.execute(
        f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM {table} AS t"
    ).fetchall()[0]
    assert row is not None
    return int(row[0]), int(row[1])
