-- Memory: the state of every memory, folded from memory.* events.
CREATE TABLE IF NOT EXISTS memories (
    memory_id VARCHAR PRIMARY KEY,
    content VARCHAR,
    memory_type VARCHAR,
    tier VARCHAR,
    importance DOUBLE,
    access_count BIGINT,
    created_at DOUBLE,
    last_accessed_at DOUBLE,
    expires_at DOUBLE,
    metadata JSON,
    metadata_raw VARCHAR,
    tags JSON,
    parent_id VARCHAR,
    session_id VARCHAR,
    deleted BOOLEAN,
    updated_at DOUBLE,
    last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS memory_relationships (
    source_memory_id VARCHAR NOT NULL,
    target_memory_id VARCHAR NOT NULL,
    relationship_type VARCHAR NOT NULL,
    strength DOUBLE,
    relationship_id VARCHAR,
    created_at DOUBLE,
    last_seq UBIGINT,
    PRIMARY KEY (source_memory_id, target_memory_id, relationship_type)
);
CREATE TABLE IF NOT EXISTS context_groups (
    group_id VARCHAR PRIMARY KEY,
    name VARCHAR,
    description VARCHAR,
    created_at DOUBLE,
    last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS context_group_members (
    group_id VARCHAR NOT NULL,
    memory_id VARCHAR NOT NULL,
    created_at DOUBLE,
    last_seq UBIGINT,
    PRIMARY KEY (group_id, memory_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id VARCHAR PRIMARY KEY,
    user_id VARCHAR,
    started_at DOUBLE,
    summary VARCHAR,
    memory_count BIGINT,
    last_seq UBIGINT
);
CREATE TABLE IF NOT EXISTS memory_embeddings (
    memory_id VARCHAR PRIMARY KEY,
    model VARCHAR,
    vector FLOAT[],
    last_seq UBIGINT
);
CREATE OR REPLACE VIEW knowledge_facts AS
    SELECT memory_id, metadata ->> 'topic' AS topic, content, importance, tags, metadata,
           created_at, updated_at
    FROM memories
    WHERE memory_type = 'knowledge_fact' AND NOT deleted;
