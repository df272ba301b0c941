-- Every event of the log, one row per stream message (duplicates included: it mirrors the log).
-- The payload and the event id (a UUID) are stored with ZSTD: DuckDB's default analysis picked
-- dictionary+FSST for them, which cost ~40% of the history's insert CPU (checkpoint analysis
-- and compression) for a file ~1.8x the size (measured on 200k mixed events: 1.48 -> 0.90 s
-- CPU, 39 -> 22 MB, same query times).
-- No primary key on seq: the runner stores each seq once (it folds only seqs above its position,
-- committed in the same transaction), and the ART index cost ~0.25 s of the writer's CPU per
-- 1M events (~15% of the history's insert). A lookup by seq reads one row group: seqs arrive
-- in order, so the row groups' min/max statistics skip the others.
CREATE TABLE IF NOT EXISTS events (
    seq UBIGINT NOT NULL,
    subject VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL USING COMPRESSION zstd,
    occurred_at DOUBLE,
    source VARCHAR,
    correlation_id VARCHAR,
    domain VARCHAR,
    key VARCHAR,
    payload JSON USING COMPRESSION zstd,
    last_seq UBIGINT
);
