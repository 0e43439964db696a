-- Rate limits of keys, projects, teams and users: requests and tokens per minute,
-- requests in flight. A key's rpm_limit / tpm_limit fields are kept in step with its row.
CREATE TABLE rate_limits (
    scope_type    TEXT NOT NULL CHECK (scope_type IN ('key', 'project', 'team', 'user')),
    scope_id      TEXT NOT NULL,
    rpm           INTEGER CHECK (rpm > 0),
    tpm           INTEGER CHECK (tpm > 0),
    max_parallel  INTEGER CHECK (max_parallel > 0),
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (scope_type, scope_id)
);
