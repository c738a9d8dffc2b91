"""The bench's latency figures stay inside the sample (a p99 once printed above the max)."""

from __future__ import annotations

from bench.flow import latency_of


def test_p99_of_a_small_sample_is_not_above_its_max() -> None:
    seconds = [0.05] * 45 + [0.1, 0.12, 0.15, 0.18, 0.196]
    latency = latency_of(seconds)
    assert latency.p50_ms == 50
    assert latency.p99_ms <= latency.max_ms == 196
    assert latency.count == 50
