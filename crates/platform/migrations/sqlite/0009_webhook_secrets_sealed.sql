-- Webhook secrets are sealed like CI secrets (XChaCha20-Poly1305, slot webhook:ID); rows written
-- before this migration hold the secret in the clear until the server seals them at start.
ALTER TABLE webhooks ADD COLUMN secret_sealed BOOLEAN NOT NULL DEFAULT FALSE;
