-- Requests: one row per request (lifecycle, route, outcome) and its stage timings.
CREATE TABLE IF NOT EXISTS requests (
    request_id VARCHAR PRIMARY KEY, kind VARCHAR, session_id VARCHAR, user_id VARCHAR,
    priority BIGINT, task_type VARCHAR, route VARCHAR, fallback_from VARCHAR, route_reason VARCHAR,
    outcome VARCHAR, latency_ms DOUBLE, received_at DOUBLE, routed_at DOUBLE,
    completed_at DOUBLE, error VARCHAR, stages BIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS request_stages (
    request_id VARCHAR, stage VARCHAR, duration_ms DOUBLE, ok BOOLEAN, detail VARCHAR,
    occurred_at DOUBLE, seq UBIGINT, last_seq UBIGINT
);
