-- Digital twin: services, hosts, models, flags, breakers, alerts (times are epoch seconds).
CREATE TABLE IF NOT EXISTS services (
    service VARCHAR PRIMARY KEY,
    host VARCHAR,
    instance_id VARCHAR,
    endpoint VARCHAR,
    version VARCHAR,
    pid BIGINT,
    port BIGINT,
    status VARCHAR,
    registered_at DOUBLE,
    last_seen_at DOUBLE,
    health_detail VARCHAR,
    crashes BIGINT,
    restarts BIGINT,
    last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS service_health (
    service VARCHAR, status VARCHAR, detail VARCHAR, host VARCHAR, latency_ms DOUBLE,
    occurred_at DOUBLE, seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS service_lifecycle (
    service VARCHAR, kind VARCHAR, occurred_at DOUBLE, detail VARCHAR, host VARCHAR,
    seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS hosts (
    host VARCHAR PRIMARY KEY, sampled_at DOUBLE, cpu_percent DOUBLE, memory_used_mb DOUBLE,
    memory_total_mb DOUBLE, load_average DOUBLE, disk_used_percent DOUBLE, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS host_samples (
    host VARCHAR, occurred_at DOUBLE, cpu_percent DOUBLE, memory_used_mb DOUBLE,
    memory_total_mb DOUBLE, load_average DOUBLE, disk_used_percent DOUBLE, gpu JSON,
    seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS models (
    model_id VARCHAR PRIMARY KEY, kind VARCHAR, backend VARCHAR, host VARCHAR, loaded BOOLEAN,
    memory_mb DOUBLE, loaded_at DOUBLE, unloaded_at DOUBLE, load_ms DOUBLE, last_error VARCHAR,
    last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS model_events (
    seq UBIGINT, model_id VARCHAR, kind VARCHAR, occurred_at DOUBLE, memory_mb DOUBLE,
    reason VARCHAR, host VARCHAR, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS flags (
    name VARCHAR PRIMARY KEY, fraction DOUBLE, updated_at DOUBLE, actor VARCHAR, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS flag_history (
    name VARCHAR, fraction DOUBLE, previous DOUBLE, actor VARCHAR, occurred_at DOUBLE,
    seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS breakers (
    service VARCHAR NOT NULL, dependency VARCHAR NOT NULL, state VARCHAR, failures BIGINT,
    updated_at DOUBLE, last_seq UBIGINT, PRIMARY KEY (service, dependency)
);
CREATE TABLE IF NOT EXISTS breaker_history (
    service VARCHAR, dependency VARCHAR, from_state VARCHAR, to_state VARCHAR, failures BIGINT,
    reason VARCHAR, occurred_at DOUBLE, seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id VARCHAR PRIMARY KEY, severity VARCHAR, message VARCHAR, service VARCHAR,
    metrics JSON, raised_at DOUBLE, cleared_at DOUBLE, active BOOLEAN, last_seq UBIGINT
);
