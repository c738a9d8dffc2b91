"""The seven agents by id: the one place that knows them all."""

from __future__ import annotations

from agents.brokerage.app import AGENT as BROKERAGE
from agents.credit import AGENT as CREDIT
from agents.custody import AGENT as CUSTODY
from agents.exchange.app import AGENT as EXCHANGE
from agents.investor.app import AGENT as INVESTOR
from agents.issuer.app import AGENT as ISSUER
from agents.settlement.app import AGENT as SETTLEMENT
from broker.runtime import AgentDefinition

AGENTS: dict[str, AgentDefinition] = {
    a.id: a for a in (INVESTOR, ISSUER, EXCHANGE, SETTLEMENT, BROKERAGE, CUSTODY, CREDIT)
}

# The agents on the participants' side: an investor's, a securities firm's, a lender's. Each
# would run on its participant's own host; on one shared host (`kabuto run all`) they run at
# ``Settings.participant_niceness``, so that the market's core settles first.
PARTICIPANT_SIDE = frozenset({INVESTOR.id, BROKERAGE.id, CREDIT.id})
