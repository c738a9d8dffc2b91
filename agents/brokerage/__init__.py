"""The brokerage intermediary (seeds 000 and 002): customers, accounts, allowances and holds."""

from broker.runtime import AgentDefinition
from schemas.identity import Role

# No flow yet: the agent starts, declares its queues and answers the runtime's checks.
AGENT = AgentDefinition(id="brokerage", role=Role.BROKERAGE)
