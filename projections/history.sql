-- Every event of the log, one row per stream message (duplicates included: it mirrors the log).
CREATE TABLE IF NOT EXISTS events (
    seq UBIGINT PRIMARY KEY,
    subject VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    occurred_at DOUBLE,
    source VARCHAR,
    correlation_id VARCHAR,
    domain VARCHAR,
    key VARCHAR,
    payload JSON,
    last_seq UBIGINT
);
