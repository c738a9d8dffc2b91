"""The issuing agent (seed 001 §2.3): transfer agent and share registry of issuing companies."""
