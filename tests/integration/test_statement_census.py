"""The statement census (KABUTO_STATEMENT_CENSUS, broker/metrics.py): with it, every statement
an agent's pool runs counts by its text as well as in the total; without it, in the total alone.
It is what `python -m bench.cpu --census` reads to say which round trips a batch makes."""

from __future__ import annotations

from prometheus_client import REGISTRY

from broker import metrics
from broker.runtime import AgentRuntime
from broker.settings import Settings
from tests import support

PROBE = "SELECT   'census probe',\n       1"  # as a statement may be written: on several lines


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_with_the_census_each_statement_counts_by_its_text_and_without_it_only_in_the_total(
    settings: Settings,
) -> None:
    text = metrics.statement_text(PROBE)
    assert text == "SELECT 'census probe', 1"
    by_text = {"agent": "issuer", "statement": text}
    for census, added in ((True, 2.0), (False, 0.0)):
        before = counted("kabuto_db_statement_texts_total", **by_text)
        total = counted("kabuto_db_statements_total", agent="issuer")
        async with AgentRuntime(support.AGENTS["issuer"], settings.with_(statement_census=census)) as issuer:
            for _ in range(2):
                await issuer.query(lambda connection: connection.fetchval(PROBE))
        assert counted("kabuto_db_statement_texts_total", **by_text) - before == added
        assert counted("kabuto_db_statements_total", agent="issuer") - total >= 2


def test_a_statements_text_is_its_words_and_at_most_its_first_hundred_characters() -> None:
    long = "SELECT " + ", ".join(f"column_{i}" for i in range(40)) + "\n  FROM somewhere"
    assert metrics.statement_text(long) == " ".join(long.split())[: metrics.STATEMENT_CHARS]
    assert len(metrics.statement_text(long)) == metrics.STATEMENT_CHARS == 100
    assert metrics.statement_text("  BEGIN;\n") == "BEGIN;"
