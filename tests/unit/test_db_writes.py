"""``broker.db.Writes``: writes that ride in another statement, renumbered after its parameters,
and the same appends of two runs joined into one rider (``joined``, docs/performance.md stop 42).
The SQL itself runs in the integration tests (test_claim_after_handlers, test_investor_sets)."""

from __future__ import annotations

from broker.db import Writes, riding

APPEND = "kept AS (INSERT INTO t (a, b) SELECT * FROM unnest($1::int[], $2::text[]))"


def test_riders_are_numbered_after_the_host_and_after_each_other() -> None:
    first = Writes("x AS (SELECT $1::int AS n)", (7,), check="(SELECT n FROM x) = $1")
    second = Writes(APPEND, ([1], ["one"]), appends=True)
    ctes, check, args = riding([first, second], 4)
    assert (
        ctes
        == ", x AS (SELECT $4::int AS n), kept AS (INSERT INTO t (a, b) SELECT * FROM unnest($5::int[], $6::text[]))"
    )
    assert check == "((SELECT n FROM x) = $4) AND (true)"
    assert args == [7, [1], ["one"]]


def test_the_same_appends_are_joined_their_rows_in_order() -> None:
    first = Writes(APPEND, ([1, 2], ["one", "two"]), what="kept", appends=True)
    joined = first.joined(Writes(APPEND, ([3], ["three"]), appends=True))
    assert joined == Writes(APPEND, ([1, 2, 3], ["one", "two", "three"]), what="kept", appends=True)


def test_writes_that_are_not_the_same_appends_are_not_joined() -> None:
    rows = Writes(APPEND, ([1], ["one"]), appends=True)
    other_ctes = Writes(APPEND.replace("kept", "other"), ([2], ["two"]), appends=True)
    checked = Writes(APPEND, ([2], ["two"]), check="(SELECT count(*) FROM kept) = 1", appends=True)
    scalar = Writes(APPEND, (2, "two"), appends=True)
    assert rows.joined(other_ctes) is None
    assert rows.joined(checked) is None
    assert checked.joined(rows) is None
    assert rows.joined(scalar) is None


def test_only_writes_that_say_they_are_appends_are_joined() -> None:
    """An update or an upsert of the same key twice in one statement is not the two statements
    one after the other (an upsert fails, an update applies one source row): found by stop 42's
    review, which joined two saves of one cover and two argument-less updates."""
    upsert = (
        "saved AS (INSERT INTO t (a, b) SELECT * FROM unnest($1::int[], $2::text[])"
        " ON CONFLICT (a) DO UPDATE SET b = excluded.b)"
    )
    assert Writes(upsert, ([1], ["one"])).joined(Writes(upsert, ([1], ["two"]))) is None
    assert Writes(APPEND, ([1], ["one"]), appends=True).joined(Writes(APPEND, ([2], ["two"]))) is None
    bump = "bumped AS (UPDATE counter SET n = n + 1)"
    assert Writes(bump, ()).joined(Writes(bump, ())) is None
    assert Writes(bump, (), appends=True).joined(Writes(bump, (), appends=True)) is None
