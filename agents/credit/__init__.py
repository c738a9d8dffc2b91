"""The credit holder (seed 003): the card issuer and the securities-backed line."""

from agents.credit.app import AGENT

__all__ = ["AGENT"]
