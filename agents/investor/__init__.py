"""The investor client (seed 001 §2.2): wallets of electronic stock certificates, and requests."""
