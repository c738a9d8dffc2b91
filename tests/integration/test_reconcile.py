"""`kabuto reconcile`: the exchange's CertID list against the issuer's register, every difference named."""

from __future__ import annotations

from agents import reconcile
from broker.settings import Settings
from tests import support


async def test_the_list_and_the_register_agree_after_issuance_and_every_difference_is_named(
    settings: Settings,
) -> None:
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        investor, exchange = rt["investor"], rt["exchange"]
        await support.open_offering(rt["issuer"])
        ids = []
        for user in ("alice", "bob", "carol"):
            request_id = await support.request(investor, user, shares=100)
            await exchange.outcomes.reply("certid_list.updated", request_id)
            ids.append(
                (await support.rows(rt["issuer"], "SELECT cert_id FROM register WHERE holder_user_id = $1", user))[0][
                    "cert_id"
                ]
            )
        assert await reconcile.differences(settings, support.ISSUE) == []

        alice, bob, carol = ids
        await exchange.query(lambda c: c.execute("DELETE FROM certid_list WHERE cert_id = $1", alice))
        await exchange.query(lambda c: c.execute("UPDATE certid_list SET user_id = 'mallory' WHERE cert_id = $1", bob))
        await exchange.query(
            lambda c: c.execute("UPDATE certid_list SET status = 'in_transfer' WHERE cert_id = $1", carol)
        )
        found = {d.cert_id: d for d in await reconcile.differences(settings, support.ISSUE)}
    assert found[alice].kind == "not listed at the exchange" and found[alice].issuer == "alice × 100"
    assert found[bob].kind.startswith("differs") and found[bob].exchange == "mallory × 100"
    assert found[carol].kind == "differs (in_transfer at the exchange)"
    assert len(found) == 3
