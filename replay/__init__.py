"""What migrates: legacy readers, mapping to MVS events, replay, verification, rollback."""
