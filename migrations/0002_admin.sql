-- What `parley admin` needs: each job's usage (for `stats`) and a runtime allowlist
-- (`users allow`), which adds to the allowlists in the settings.

ALTER TABLE jobs ADD COLUMN prompt_tokens INTEGER;
ALTER TABLE jobs ADD COLUMN completion_tokens INTEGER;
ALTER TABLE jobs ADD COLUMN ttft_ms REAL;
ALTER TABLE jobs ADD COLUMN model TEXT;

CREATE TABLE allowed_users (
    platform TEXT NOT NULL,
    platform_user_id TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (platform, platform_user_id)
);
