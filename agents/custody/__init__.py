"""Custody (seed 003): book-entry positions, locks (pledges) and holdings deltas."""

from broker.runtime import AgentDefinition
from schemas.identity import Role

# No flow yet: the agent starts, declares its queues and answers the runtime's checks.
AGENT = AgentDefinition(id="custody", role=Role.CUSTODY)
