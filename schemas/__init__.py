"""The wire contract: pydantic models for every message Kabuto agents exchange.

Pure data: this package imports nothing else of Kabuto, so a client can depend on it alone.
"""
