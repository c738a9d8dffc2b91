"""The credit holder (seed 003): credit limits and securities-backed credit lines."""

from broker.runtime import AgentDefinition
from schemas.identity import Role

# No flow yet: the agent starts, declares its queues and answers the runtime's checks.
AGENT = AgentDefinition(id="credit", role=Role.CREDIT)
