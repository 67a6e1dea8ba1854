"""Engagement exact values on a hand-made log, window boundaries annotated row by row."""

from __future__ import annotations

import pytest

from clm.settings import ClmSettings
from tests.helpers import ev, features, tx

AS_OF = "2024-07-01"  # 7d from 2024-06-24; 30d (and trend 'recent') from 2024-06-01;
# 90d from 2024-04-02 (trend 'prior' = 2024-04-02 .. 2024-05-31); email rates from 2023-07-02

EVENTS = [
    ev("E", "2024-06-24T00:00:00", "session", channel="web"),  # first instant of 7d
    ev("E", "2024-06-23T23:59:59", "session", channel="app"),  # 30d, not 7d
    ev("E", "2024-05-15T12:00:00", "session", channel="app"),  # prior period, in 90d
    ev("E", "2024-04-01T23:59:59", "session", channel="web"),  # one second before 90d
    ev("E", "2024-07-01T00:00:00", "session", channel="chat"),  # at as_of: excluded
    ev("E", "2024-02-01", "nps", 6),
    ev("E", "2024-06-10", "nps", 10),
    ev("E", "2024-06-20", "nps", None),  # an unanswered survey: no score
    ev("E", "2023-10-01", "support_ticket"),
    ev("E", "2024-03-01", "referral"),
    ev("E", "2024-06-30", "review"),
    ev("E", "2023-06-01", "email_sent"),  # before the 365-day email window
    ev("E", "2024-01-10", "email_sent"),
    ev("E", "2024-02-10", "email_sent"),
    ev("E", "2024-03-10", "email_sent"),
    ev("E", "2024-01-11", "email_open"),
    ev("E", "2024-02-11", "email_open"),
    ev("E", "2024-01-11", "email_click"),
    ev("Q", "2024-06-15", "visit"),
]


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return features(
        tmp_path_factory.mktemp("eng"),
        AS_OF,
        transactions=[
            tx("E", "2024-03-01", 20.0, channel="store"),
            tx("T", "2024-06-15", 9.0, channel="store"),  # a buyer with no events at all
            tx("T", "2024-06-16", 9.0, channel="web"),
        ],
        events=EVENTS,
    )


def test_counts_per_type_and_window(eng) -> None:  # type: ignore[no-untyped-def]
    e = eng.loc["E"]
    assert (e.session_events_7d, e.session_events_30d, e.session_events_90d) == (1, 2, 3)
    assert (e.events_7d, e.events_30d) == (2, 5)  # + review 06-30; + nps 06-10, 06-20
    assert e.visit_events_90d == 0 and eng.loc["Q"].visit_events_30d == 1


def test_trend_compares_daily_rates(eng) -> None:  # type: ignore[no-untyped-def]
    recent, prior = 2 / 30, 1 / 60
    e = eng.loc["E"]
    assert e.session_trend_30d_vs_prior_60d == pytest.approx((recent - prior) / (recent + prior))
    assert e.referral_trend_30d_vs_prior_60d == 0.0  # nothing in either period
    assert eng.loc["Q"].visit_trend_30d_vs_prior_60d == 1.0  # new activity only


def test_recency_activity_and_channels(eng) -> None:  # type: ignore[no-untyped-def]
    e = eng.loc["E"]
    assert e.days_since_last_event == 1
    # Active days count events and purchases.
    days = {r["timestamp"][:10] for r in EVENTS if r["customer_id"] == "E"} | {"2024-03-01"}
    days = {d for d in days if "2023-07-02" <= d < "2024-07-01"}
    assert e.active_days_90d == len({d for d in days if d >= "2024-04-02"}) == 6
    assert e.channels_365d == 3  # web, app (events) and store (transactions); chat is at as_of


def test_purchases_count_as_activity_without_any_event(eng) -> None:  # type: ignore[no-untyped-def]
    t = eng.loc["T"]
    assert (t.active_days_90d, t.channels_365d) == (2, 2)
    assert (t.events_30d, t.support_tickets) == (0, 0)
    assert t.days_since_last_event != t.days_since_last_event  # NaN: no event


def test_voice_of_the_customer(eng) -> None:  # type: ignore[no-untyped-def]
    e = eng.loc["E"]
    assert (e.support_tickets, e.referrals, e.reviews) == (1, 1, 1)
    assert (e.last_nps, e.mean_nps, e.nps_responses) == (10.0, 8.0, 2)
    assert e.email_open_rate_365d == pytest.approx(2 / 3)
    assert e.email_click_rate_365d == pytest.approx(1 / 3)
    q = eng.loc["Q"]
    assert q.email_open_rate_365d != q.email_open_rate_365d  # NaN: no email sent
    assert q.last_nps != q.last_nps


def test_windows_and_event_types_come_from_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = ClmSettings()
    settings.features.event_windows_days = [14]
    settings.features.event_types = ["session"]
    frame = features(
        tmp_path,
        AS_OF,
        settings=settings,
        transactions=[tx("E", "2024-03-01", 20.0)],
        events=EVENTS,
    )
    assert frame.loc["E"].session_events_14d == 2
    # The trend has counts of its own when the windows do not cover its periods.
    assert frame.loc["E"].session_trend_30d_vs_prior_60d == pytest.approx(0.6)
    assert "nps_events_14d" not in frame.columns and "session_events_7d" not in frame.columns


@pytest.mark.parametrize(
    ("windows", "activity", "as_of"),
    [([7, 30, 90], 365, "2025-07-01"), ([7, 200], 60, "2024-11-15"), ([130], 365, "2025-02-01")],
)
def test_bit_masks_count_what_grouping_counts(  # type: ignore[no-untyped-def]
    sample_dir, windows, activity, as_of
) -> None:
    """Active days and channels counted in bit masks (pieces of 62 days) are the values that
    grouping the touches by day and by channel gives, at any windows."""
    from datetime import date

    from features.engagement import engagement_query
    from features.snapshots import event_types_before
    from features.sources import load

    data = load(sample_dir)
    settings = ClmSettings()
    settings.features.event_windows_days = windows
    settings.features.activity_window_days = activity
    cutoff = date.fromisoformat(as_of)
    types = event_types_before(data, as_of=cutoff, settings=settings)
    frames = []
    for channels in (data.channels(), None):
        query = engagement_query(
            as_of=cutoff,
            settings=settings.features,
            stages=settings.stages,
            event_types=types,
            channels=channels,
        )
        assert ("bit_or" in query.sql) == (channels is not None)
        frames.append(data.con.sql(f"SELECT * FROM ({query.sql}) ORDER BY customer_id").df())
    masked, grouped = frames
    longest = max(windows)
    columns = [f"active_days_{longest}d", f"channels_{activity}d"]
    assert len(masked) == len(grouped) > 1000
    assert masked["customer_id"].tolist() == grouped["customer_id"].tolist()
    for column in columns:
        assert masked[column].isna().tolist() == grouped[column].isna().tolist(), column
        assert masked[column].fillna(-1).tolist() == grouped[column].fillna(-1).tolist()
    assert masked[columns[0]].max() > 3 and masked[columns[1]].max() >= 3
    rest = [c for c in masked.columns if c not in columns]
    assert masked[rest].equals(grouped[rest])


def test_more_channels_than_bits_are_grouped(sample_dir) -> None:  # type: ignore[no-untyped-def]
    from datetime import date

    from features.engagement import MASK_BITS, engagement_query

    settings = ClmSettings()
    query = engagement_query(
        as_of=date(2025, 7, 1),
        settings=settings.features,
        stages=settings.stages,
        event_types=["session"],
        channels=[f"c{i}" for i in range(MASK_BITS + 1)],
    )
    assert "bit_or" not in query.sql and "GROUP BY customer_id, channel" in query.sql


def test_event_type_column_names_keep_accented_letters_plain() -> None:
    from features.engagement import event_type_columns

    names = event_type_columns(["Über-Event", "Add to cart!", "café visit", "2fa"])
    assert names == {
        "Über-Event": "uber_event",
        "Add to cart!": "add_to_cart",
        "café visit": "cafe_visit",
        "2fa": "t_2fa",
    }
