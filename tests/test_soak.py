"""Three minutes of mixed hostile traffic (benchmarks/soak.py): no growth, no error but the expected sentences."""

import pytest

from benchmarks.soak import GROWTH_LIMIT, soak


@pytest.mark.slow
def test_three_minutes_of_mixed_traffic():
    report = soak(minutes=3.0, clients=4)
    assert report["unexpected_errors"] == []
    assert report["good_served"] == report["good_requests"] > 0 and report["served_after"]
    assert set(report["requests_by_kind"]) == {"photo", "generate", "bad file", "wrong type", "cancel"}
    assert report["growth_mb_per_min"] < GROWTH_LIMIT, report["samples"]
