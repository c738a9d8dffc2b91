"""``broker.db.Writes``: writes that ride in another statement, renumbered after its parameters,
and the same appends of two runs joined into one rider (``joined``, docs/performance.md stop 42).
The SQL itself runs in the integration tests (test_claim_after_handlers, test_investor_sets)."""

from __future__ import annotations

from broker.db import Writes, riding

APPEND = "kept AS (INSERT INTO t (a, b) SELECT * FROM unnest($1::int[], $2::text[]))"


def test_riders_are_numbered_after_the_host_and_after_each_other() -> None:
    first = Writes("x AS (SELECT $1::int AS n)", (7,), check="(SELECT n FROM x) = $1")
    second = Writes(APPEND, ([1], ["one"]))
    ctes, check, args = riding([first, second], 4)
    assert (
        ctes
        == ", x AS (SELECT $4::int AS n), kept AS (INSERT INTO t (a, b) SELECT * FROM unnest($5::int[], $6::text[]))"
    )
    assert check == "((SELECT n FROM x) = $4) AND (true)"
    assert args == [7, [1], ["one"]]


def test_the_same_appends_are_joined_their_rows_in_order() -> None:
    joined = Writes(APPEND, ([1, 2], ["one", "two"]), what="kept").joined(Writes(APPEND, ([3], ["three"])))
    assert joined == Writes(APPEND, ([1, 2, 3], ["one", "two", "three"]), what="kept")


def test_writes_that_are_not_the_same_appends_are_not_joined() -> None:
    rows = Writes(APPEND, ([1], ["one"]))
    other_ctes = Writes(APPEND.replace("kept", "other"), ([2], ["two"]))
    checked = Writes(APPEND, ([2], ["two"]), check="(SELECT count(*) FROM kept) = 1")
    scalar = Writes(APPEND, (2, "two"))
    assert rows.joined(other_ctes) is None
    assert rows.joined(checked) is None
    assert checked.joined(rows) is None
    assert rows.joined(scalar) is None
