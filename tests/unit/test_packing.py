"""How a batch's messages are cut into outbox rows (issue 8, stop 32; ``broker.outbox.packed``), and
what a packed item is to the consumer (``broker.bundle``): no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from broker.bundle import (
    BUNDLE_TYPE,
    ITEMS_HEADER,
    BundledDelivery,
    BundleMalformed,
    Bundling,
    Item,
    carried,
    pack,
    sent_alone,
    unbundled,
)
from broker.envelope import Sealed, seal
from broker.outbox import packed, seal_headers
from broker.pki import KeyStore
from broker.provenance import provenance
from broker.trust import TrustStore
from schemas.dvp import CoverGranted
from schemas.issuance import CertificateIssuanceRequest
from schemas.trading import TradeExecuted
from tests import support

NOW = datetime(2026, 12, 6, tzinfo=UTC)
PACKING = Bundling(4, 4_096, frozenset({"dave"}))
TRADE = TradeExecuted(matching_number=7, issue_code="KBT", price=Decimal(1000), quantity=100, amount=Decimal(100_000))


def request(keys: KeyStore, to: str, shares: int = 100, signer: str = "alice") -> Sealed:
    payload: CertificateIssuanceRequest = support.issuance_request(signer, shares=shares)
    return seal(keys.load_identity(signer), payload, recipient=to, now=NOW)


def cut(messages: list[Sealed], packing: Bundling | None = PACKING) -> list[list[int]]:
    where = {id(m): n for n, m in enumerate(messages)}
    return [[where[id(m)] for m in group] for group in packed(messages, packing)]


def test_one_agent_queues_messages_go_together_in_order_at_the_place_of_the_first(keys: KeyStore) -> None:
    to = ["exchange", "settlement", "exchange", "dave", "settlement", "exchange"]
    assert cut([request(keys, t) for t in to]) == [[0, 2, 5], [1, 4], [3]]


def test_a_hosted_investors_messages_share_the_investor_agents_queue(keys: KeyStore) -> None:
    # dave is hosted by the investor agent (``Bundling.hosted``); erin has her own queue
    to = ["dave", "erin", "dave", "investor", "erin"]
    assert cut([request(keys, t) for t in to]) == [[0, 2, 3], [1], [4]]


def test_answers_go_together_apart_from_new_work(keys: KeyStore) -> None:
    settlement = keys.load_identity("settlement")

    def granted() -> Sealed:
        return seal(settlement, CoverGranted(cover_id=uuid4(), amount=Decimal(1)), recipient="exchange", now=NOW)

    messages = [granted(), request(keys, "exchange", signer="settlement"), granted()]
    # the exchange's answers queue and its inbox are two queues
    assert cut(messages) == [[0, 2], [1]]


def test_a_message_under_another_key_closes_the_queues_group_so_its_order_holds(keys: KeyStore) -> None:
    messages = [
        request(keys, "exchange"),
        request(keys, "exchange", signer="bob"),
        request(keys, "exchange"),
        request(keys, "exchange"),
    ]
    assert cut(messages) == [[0], [1], [2, 3]]


def test_events_participants_and_messages_signed_already_go_alone(keys: KeyStore) -> None:
    event = seal(keys.load_identity("exchange"), TRADE, recipient=None, now=NOW)
    signed = request(keys, "exchange")
    assert signed.headers  # its signature made: it travels with it
    messages = [request(keys, "exchange"), event, signed, request(keys, "carol"), request(keys, "exchange")]
    # the signed one closes the exchange's open group: the fifth cannot go before it
    assert cut(messages) == [[0], [1], [2], [3], [4]]


def test_a_group_is_cut_at_its_most_items_and_bytes(keys: KeyStore) -> None:
    assert cut([request(keys, "exchange") for _ in range(9)]) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    size = len(request(keys, "exchange").body)
    two_do_not_fit = Bundling(32, 2 * size - 1)
    assert cut([request(keys, "exchange") for _ in range(3)], two_do_not_fit) == [[0], [1], [2]]
    three_fit = Bundling(32, 3 * size)
    assert cut([request(keys, "exchange") for _ in range(4)], three_fit) == [[0, 1, 2], [3]]
    too_big = Bundling(32, size - 1)  # a message larger than a bundle may be travels alone
    assert cut([request(keys, "exchange") for _ in range(2)], too_big) == [[0], [1]]


def test_without_packing_or_with_bundles_off_every_message_is_alone(keys: KeyStore) -> None:
    messages = [request(keys, "exchange") for _ in range(3)]
    assert cut(messages, None) == [[0], [1], [2]]
    assert cut(messages, Bundling(1)) == [[0], [1], [2]]


def test_a_message_is_signed_only_when_its_signature_is_asked_for(keys: KeyStore) -> None:
    sealed = request(keys, "exchange")
    assert sealed.signed is None
    headers = sealed.headers
    assert sealed.signed is headers and sealed.headers is headers  # made once
    with pytest.raises(ValueError, match="no signature and no key"):
        _ = Sealed(sealed.envelope, sealed.body).headers


class _Delivery:
    def __init__(self, body: bytes, headers: Mapping[str, Any]) -> None:
        self.body, self.headers, self.type, self.message_id = body, headers, BUNDLE_TYPE, "bundle-1"
        self.routing_key = "issuer"


SEAL = {"kabuto-signature": "c2VhbA==", "kabuto-signer": "ab" * 32, "x-kabuto-attempt": 2}


def test_a_packed_item_is_read_with_its_bundles_seal_and_sent_alone_as_the_bundle_narrowed_to_it() -> None:
    items = [Item("m1", "t", {}, b"one"), Item("m2", "t", {}, b"two")]
    body = pack(items)
    _, second = unbundled(_Delivery(body, SEAL))  # type: ignore[arg-type]
    assert isinstance(second, BundledDelivery) and not second.signed_alone
    assert second.headers == SEAL  # the seal, and the bundle's attempt
    message_id, type_, sent, headers = sent_alone(second)
    assert (message_id, type_, sent) == ("m2", BUNDLE_TYPE, body)
    assert headers == {**SEAL, ITEMS_HEADER: "m2"}
    # and it comes back as that item alone
    (again,) = unbundled(_Delivery(sent, headers))  # type: ignore[arg-type]
    assert again.message_id == "m2" and again.body == b"two"


def test_an_item_with_its_own_signature_is_read_and_sent_alone_as_itself() -> None:
    own = {"kabuto-signature": "b3du", "kabuto-signer": "cd" * 32}
    (delivery,) = unbundled(_Delivery(pack([Item("m1", "t", own, b"one")]), SEAL))  # type: ignore[arg-type]
    assert isinstance(delivery, BundledDelivery) and delivery.signed_alone and delivery.headers == own
    assert sent_alone(delivery) == ("m1", "t", b"one", own)


def test_the_items_header_narrows_a_bundle_and_names_only_items_it_holds() -> None:
    body = pack([Item(f"m{n}", "t", {}, b"x") for n in range(4)])
    assert [i.message_id for i in carried(body, {ITEMS_HEADER: "m3,m1"})] == ["m1", "m3"]  # the bundle's order
    assert [i.message_id for i in carried(body, {ITEMS_HEADER: b"m2"})] == ["m2"]
    for named in ("m9", "m1,m9", ""):
        with pytest.raises(BundleMalformed, match="does not hold"):
            carried(body, {ITEMS_HEADER: named})
    # a delivery whose header names what its bundle does not hold is refused whole
    (whole,) = unbundled(_Delivery(body, {ITEMS_HEADER: "m9"}))  # type: ignore[arg-type]
    assert not isinstance(whole, BundledDelivery)


def test_a_packed_items_sender_is_proven_by_its_bundles_seal_and_by_nothing_else(keys: KeyStore) -> None:
    """What ``kabuto deadletters`` shows of a packed item (``broker.provenance``)."""
    trust = TrustStore(keys.ca_certificate(), keys.certificates())
    alice = keys.load_identity("alice")
    inside, outside = request(keys, "issuer"), request(keys, "issuer", shares=200)
    bundle = pack([Item(str(inside.envelope.message_id), inside.envelope.type, {}, inside.body)])
    headers = seal_headers(alice, bundle, packed=True)
    proven = provenance(inside.body, headers, trust, sealed_in=bundle)
    assert (proven.verified, proven.sender, proven.message_id) == (True, "alice", str(inside.envelope.message_id))
    # the seal over the bundle is no signature over the item's bytes alone
    assert provenance(inside.body, headers, trust).problem == "signature_invalid: signature of alice does not verify"
    # nor over a message the bundle does not hold
    assert provenance(outside.body, headers, trust, sealed_in=bundle).problem == (
        "malformed: not an item of the bundle sealed"
    )
