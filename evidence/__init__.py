"""Evidence: hashes, chain of custody, manifest, sealing, verification and unsealing."""
