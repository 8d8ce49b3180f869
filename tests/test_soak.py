"""Three minutes of mixed hostile traffic (benchmarks/soak.py): no growth trend, no error but the expected sentences."""

import pytest

from benchmarks.soak import GROWTH_LIMIT, describe, soak, trend

# Between requests the server's RSS wanders by a few MB from one minute to the next (measured: points within
# 8 to 12 MB of each other over two minutes, giving slopes from -5.8 to +1.0 MB/min on runs of the same code),
# so the two minutes after this run's warm-up resolve the trend to about ±7 MB/min: its interval's upper end is
# held to three times the long-run limit here. The 30-minute run (README) is the one held to GROWTH_LIMIT.
SHORT_RUN_LIMIT = 3 * GROWTH_LIMIT


def test_the_trend_is_robust_to_one_stray_floor_and_honest_about_few_points():
    flat = [(15.0 * index, 1000.0) for index in range(8)]
    assert trend(flat) == (0.0, 0.0, 0.0)
    stray = flat[:-1] + [(105.0, 1100.0)]  # the last floor taken while a request was in flight
    growth, low, high = trend(stray)
    assert growth == 0.0 and low == 0.0 and high > GROWTH_LIMIT  # the slope stays flat; the interval says it is unsure
    rising = [(15.0 * index, 1000.0 + index) for index in range(8)]  # 1 MB every 15 s
    assert trend(rising) == pytest.approx((4.0, 4.0, 4.0))
    assert trend(flat[:1])[1:] == (float("-inf"), float("inf"))
    # y = i² MB at minute i, i = 0..9: the 45 pairwise slopes are i + j; their median is 9, and Sen's 95 % ranks
    # (1-based 11 and 35 of 45) fall on the sums 6 and 12.
    assert trend([(60.0 * i, float(i * i)) for i in range(10)]) == pytest.approx((9.0, 6.0, 12.0))


@pytest.mark.slow
def test_three_minutes_of_mixed_traffic():
    report = soak(minutes=3.0, clients=4)
    print(describe(report))
    assert report["unexpected_errors"] == []
    assert report["good_served"] == report["good_requests"] > 0 and report["served_after"]
    assert set(report["requests_by_kind"]) == {"photo", "generate", "bad file", "wrong type", "cancel"}
    low, high = report["growth_interval_mb_per_min"]
    assert len(report["floors"]) >= 8  # two minutes after the warm-up, a point every 10 s
    growth, points = report["growth_mb_per_min"], report["floors"]
    assert high < SHORT_RUN_LIMIT, (
        f"RSS between requests grows {growth:+.1f} MB/min ({low:+.1f} to {high:+.1f}): {points}"
    )
