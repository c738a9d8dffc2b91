"""The seven agents by id: the one place that knows them all."""

from __future__ import annotations

from agents.brokerage.app import AGENT as BROKERAGE
from agents.credit import AGENT as CREDIT
from agents.custody import AGENT as CUSTODY
from agents.exchange.app import AGENT as EXCHANGE
from agents.investor.app import AGENT as INVESTOR
from agents.issuer.app import AGENT as ISSUER
from agents.settlement.app import AGENT as SETTLEMENT
from broker.pki import default_participant
from broker.runtime import AgentDefinition
from broker.settings import AGENT_IDS
from schemas.identity import CARD_ISSUER_ID, Participant, Role

AGENTS: dict[str, AgentDefinition] = {
    a.id: a for a in (INVESTOR, ISSUER, EXCHANGE, SETTLEMENT, BROKERAGE, CUSTODY, CREDIT)
}


def institutions() -> list[Participant]:
    """Every participant the agents host besides investors: the six agents and the card
    issuer the credit agent hosts — what ``kabuto ca enrol-all`` enrols before the investors."""
    agents = [default_participant(agent, Role(agent)) for agent in AGENT_IDS if agent != "investor"]
    return [*agents, default_participant(CARD_ISSUER_ID, Role.CARD_ISSUER)]
