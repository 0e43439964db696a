-- Self-service keys and single sign-on.
-- Keys gain the `approved` state (approved by a lead, secret not yet revealed) and the
-- decision (who, when, why).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_status_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_status_check
    CHECK (status IN ('requested', 'approved', 'active', 'rejected', 'revoked', 'expired'));
ALTER TABLE api_keys ADD COLUMN decided_by TEXT;
ALTER TABLE api_keys ADD COLUMN decided_at BIGINT;
ALTER TABLE api_keys ADD COLUMN decision_reason TEXT;
CREATE INDEX api_keys_user ON api_keys(user_id);

-- A team's model allow-list (JSON array; empty = every configured model).
ALTER TABLE teams ADD COLUMN models TEXT NOT NULL DEFAULT '[]';

-- Users signed in through SSO are found again by issuer + subject, not by e-mail.
ALTER TABLE users ADD COLUMN sso_subject TEXT;
CREATE UNIQUE INDEX users_sso_subject ON users(sso_subject);

-- SSO sign-ins in flight: state, nonce and PKCE verifier bound to the browser's cookie
-- (stored by the cookie's hash), single use, short-lived.
CREATE TABLE sso_logins (
    id_hash        TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
