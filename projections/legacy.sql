-- What the legacy system left behind, and the replays that imported it.
CREATE TABLE IF NOT EXISTS legacy_log (
    agent VARCHAR, level VARCHAR, message VARCHAR, occurred_at DOUBLE, source_file VARCHAR,
    line_no BIGINT, seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS legacy_health (
    service VARCHAR, sweep_at DOUBLE, status_text VARCHAR, healthy BOOLEAN, port BIGINT,
    response VARCHAR, host VARCHAR, seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS legacy_observations (
    kind VARCHAR, level VARCHAR, message VARCHAR, occurred_at DOUBLE, elapsed_hours DOUBLE,
    metrics JSON, seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS legacy_rejections (
    source_format VARCHAR, source_path VARCHAR, location VARCHAR, reason VARCHAR, raw VARCHAR,
    seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS legacy_bridge_calls (
    agent VARCHAR, request_id VARCHAR, action VARCHAR, ok BOOLEAN, latency_ms DOUBLE,
    error VARCHAR, occurred_at DOUBLE, seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS replays (
    source_format VARCHAR, source_path VARCHAR, records_read BIGINT, events_written BIGINT,
    duplicates BIGINT, rejected BIGINT, summary JSON, occurred_at DOUBLE, seq UBIGINT,
    last_seq UBIGINT
);
