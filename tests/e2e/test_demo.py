"""``kabuto demo`` (the README's main command) walks through every flow, in this process, against
the real services: every flow's section is printed and none of its waits times out. Found
missing at stop 34: the custody flow waited for a ``securities.commit`` that delivery against
earmarked cash no longer sends, and only ``make demo`` would have shown it."""

from __future__ import annotations

from agents import demo
from broker.settings import Settings

FLOWS = (
    "Flow 1 — certificate issuance",
    "Flow 2 — exchange trading with certificates",
    "Flow 6 — off-exchange transfer and reissue",
    "Flow 4, book entry — custody clients trade, delivery versus payment",
    "Flow 3 — brokered order with account selection",
    "Flow 5 — securities-backed credit",
    "Flow 4 — delivery versus payment",
)


async def test_the_demo_walks_through_every_flow_in_order(settings: Settings) -> None:
    lines: list[str] = []
    await demo.run(settings, say=lines.append)
    text = "\n".join(lines)
    places = [text.find(flow) for flow in FLOWS]
    assert all(place >= 0 for place in places), [flow for flow, place in zip(FLOWS, places, strict=True) if place < 0]
    assert places == sorted(places)
    # the book-entry trade settled both legs: custody's positions and settlement's balances after it
    custody_section = text[places[3] : places[4]]
    assert "custody reserves" in custody_section and "balance JPY" in custody_section
