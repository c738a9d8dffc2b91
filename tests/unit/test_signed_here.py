"""``broker.signed_here``: the relay seals only what this process signed as it stands (stop 27,
found by review) — a message's note matches its body, signature and signer exactly, is taken
once, and the notes are bounded."""

from __future__ import annotations

from broker.signed_here import SignedHere
from schemas.envelope import SIGNATURE_HEADER, SIGNER_HEADER

HEADERS = {SIGNATURE_HEADER: "c2lnbmF0dXJl", SIGNER_HEADER: "ab" * 32}


def test_a_message_as_signed_is_vouched_for_once() -> None:
    notes = SignedHere()
    notes.note("m1", b"body", HEADERS)
    assert notes.take("m1", b"body", HEADERS)
    assert not notes.take("m1", b"body", HEADERS)  # taken as it is published: no second seal
    assert len(notes) == 0


def test_a_changed_body_signature_or_signer_is_not_vouched_for_and_its_note_is_taken() -> None:
    for body, headers in (
        (b"other body", HEADERS),
        (b"body", {**HEADERS, SIGNATURE_HEADER: "b3RoZXI="}),
        (b"body", {**HEADERS, SIGNER_HEADER: "cd" * 32}),
        (b"body", {}),
    ):
        notes = SignedHere()
        notes.note("m1", b"body", HEADERS)
        assert not notes.take("m1", body, headers)
        assert len(notes) == 0


def test_a_message_never_noted_here_is_not_vouched_for() -> None:
    assert not SignedHere().take("m1", b"body", HEADERS)


def test_past_the_limit_the_oldest_notes_go_first() -> None:
    notes = SignedHere(limit=3)
    for n in range(5):
        notes.note(f"m{n}", b"body", HEADERS)
    assert len(notes) == 3
    assert [notes.take(f"m{n}", b"body", HEADERS) for n in range(5)] == [False, False, True, True, True]
