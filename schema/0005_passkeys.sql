-- Passkeys (WebAuthn credentials): a user signs in to the web app with any of theirs.
--
-- `id` is the credential id (base64url, as the browser reports it); `passkey` is the credential
-- as webauthn-rs serialises it (public key, algorithm, sign counter), rewritten after each sign-in
-- so a counter that goes backwards (a cloned authenticator) is caught.

CREATE TABLE passkeys (
    id TEXT PRIMARY KEY,
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    passkey TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE INDEX passkeys_by_user ON passkeys (user_name);
