-- Parley's initial schema.
-- Timestamps are ISO-8601 UTC text, e.g. 2024-05-01T12:00:00.000Z (sorts as it reads).
-- Applied by bot/store/migrations.py inside one transaction; do not add BEGIN/COMMIT here.

-- A person on one platform. Bans and allowlists key on (platform, platform_user_id).
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    platform TEXT NOT NULL,
    platform_user_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (platform, platform_user_id)
);

-- One user's thread in one chat. /reset deactivates the current one and starts another;
-- the old one and its messages stay.
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    platform TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Exactly one active conversation per (user, platform, chat).
CREATE UNIQUE INDEX conversations_one_active
    ON conversations (user_id, platform, chat_id) WHERE active = 1;

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    token_count INTEGER CHECK (token_count IS NULL OR token_count >= 0),
    model TEXT,
    status TEXT NOT NULL DEFAULT 'complete'
        CHECK (status IN ('complete', 'partial', 'cancelled', 'failed', 'pending')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX messages_by_conversation ON messages (conversation_id, id);

-- One reply to produce: message_id is the user's message, reply_message_id the answer.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    reply_message_id INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    error TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE INDEX jobs_by_message ON jobs (message_id);
CREATE INDEX jobs_by_reply ON jobs (reply_message_id);
CREATE INDEX jobs_by_user ON jobs (user_id);

-- Bot-wide settings changed at runtime (e.g. by `parley admin`).
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Per-user settings, e.g. a personal system prompt.
CREATE TABLE user_settings (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);

-- Keyed by platform identity, so someone can be banned before they ever write.
CREATE TABLE bans (
    platform TEXT NOT NULL,
    platform_user_id TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (platform, platform_user_id)
);
