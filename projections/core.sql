-- Bookkeeping shared by all projections (see notes/SCHEMA.md).
CREATE TABLE IF NOT EXISTS projection_positions (
    projection VARCHAR PRIMARY KEY,
    last_seq UBIGINT NOT NULL,
    updated_at DOUBLE
);
CREATE TABLE IF NOT EXISTS dead_letters (
    projection VARCHAR NOT NULL,
    seq UBIGINT NOT NULL,
    subject VARCHAR,
    reason VARCHAR NOT NULL,
    raw BLOB,
    recorded_at DOUBLE
);
