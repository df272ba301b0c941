-- Translation cache, learning loop, metrics and emotion state.
CREATE TABLE IF NOT EXISTS translations (
    cache_key VARCHAR PRIMARY KEY, text VARCHAR, source_lang VARCHAR, target_lang VARCHAR,
    translation VARCHAR, engine VARCHAR, translated_at DOUBLE, duration_ms DOUBLE,
    last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS learning_opportunities (
    opportunity_id VARCHAR PRIMARY KEY, source_agent VARCHAR, opportunity_type VARCHAR,
    priority_score DOUBLE, status VARCHAR, created_at DOUBLE, interaction_data JSON,
    last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS training_cycles (
    cycle_id VARCHAR PRIMARY KEY, model_name VARCHAR, status VARCHAR, start_time DOUBLE,
    end_time DOUBLE, opportunities JSON, resource_allocation JSON, hyperparameters JSON,
    training_logs VARCHAR, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS parameter_history (
    name VARCHAR, value DOUBLE, performance_metric DOUBLE, occurred_at DOUBLE, metadata JSON,
    seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS metrics (
    agent VARCHAR, metric_name VARCHAR, value DOUBLE, occurred_at DOUBLE, host VARCHAR,
    context JSON, seq UBIGINT, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS model_evaluations (
    evaluation_id VARCHAR PRIMARY KEY, model_name VARCHAR, cycle_id VARCHAR, trust_score DOUBLE,
    accuracy DOUBLE, f1_score DOUBLE, avg_latency_ms DOUBLE, evaluated_at DOUBLE,
    comparison JSON, last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS emotion_states (
    session_id VARCHAR PRIMARY KEY, emotion VARCHAR, tone VARCHAR, sentiment DOUBLE,
    intensity DOUBLE, occurred_at DOUBLE, cues JSON, last_seq UBIGINT
);
