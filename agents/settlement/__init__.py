"""Settlement (seed 001 §2.5, seed 002 fund settlement): the double-entry cash ledger."""

from broker.runtime import AgentDefinition
from schemas.identity import Role

# No flow yet: the agent starts, declares its queues and answers the runtime's checks.
AGENT = AgentDefinition(id="settlement", role=Role.SETTLEMENT)
