"""Custody (seed 003): book-entry positions, locks (pledges), holdings deltas, sale on instruction."""

from agents.custody.app import AGENT

__all__ = ["AGENT"]
