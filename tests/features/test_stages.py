"""Lifecycle stages: one test per rule and per transition, on hand-made logs."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from clm.settings import StageSettings
from features.stages import stages_at
from tests.helpers import dataset, ev, tx


def stage_of(
    tmp_path: Path,
    as_of: str,
    transactions: list[dict[str, object]] | None = None,
    events: list[dict[str, object]] | None = None,
    customers: list[dict[str, object]] | None = None,
    settings: StageSettings | None = None,
) -> dict[str, tuple[str, int]]:
    tables = {"transactions": transactions or [tx("filler", "2000-01-01", 1.0)]}
    if events:
        tables["events"] = events
    if customers:
        tables["customers"] = customers
    data = dataset(tmp_path, **tables)
    frame = stages_at(
        data.con, as_of=date.fromisoformat(as_of), settings=settings or StageSettings()
    )
    return {r.customer_id: (r.stage, r.days_in_stage) for r in frame.itertuples()}


# --- one test per rule ---------------------------------------------------------------------


def test_awareness_any_event_no_lead_signal(tmp_path: Path) -> None:
    got = stage_of(tmp_path, "2024-07-01", events=[ev("v", "2024-06-01", "visit")])
    assert got["v"] == ("awareness", 30)


def test_consideration_by_lead_event_or_signup_date(tmp_path: Path) -> None:
    got = stage_of(
        tmp_path,
        "2024-07-01",
        events=[ev("l", "2024-05-01", "visit"), ev("l", "2024-06-21", "add_to_cart")],
        customers=[{"customer_id": "s", "signup_date": "2024-06-11"}],
    )
    assert got["l"] == ("consideration", 10)
    assert got["s"] == ("consideration", 20)


def test_purchase_exactly_one_purchase_day(tmp_path: Path) -> None:
    got = stage_of(
        tmp_path,
        "2024-07-01",
        transactions=[tx("p", "2024-06-01T09:00:00", 5.0), tx("p", "2024-06-01T19:00:00", 7.0)],
    )
    assert got["p"] == ("purchase", 30)


def test_retention_two_purchase_days(tmp_path: Path) -> None:
    got = stage_of(
        tmp_path,
        "2024-07-01",
        transactions=[
            tx("r", "2024-03-01", 5.0),
            tx("r", "2024-05-02", 5.0),
            tx("r", "2024-06-01", 5.0),
        ],
    )
    assert got["r"] == ("retention", 60)  # since the second purchase day


def test_advocacy_by_referral_review_or_promoter_score(tmp_path: Path) -> None:
    buys = [tx(c, d, 5.0) for c in ("a1", "a2", "a3", "p8") for d in ("2024-03-01", "2024-04-01")]
    got = stage_of(
        tmp_path,
        "2024-07-01",
        transactions=buys,
        events=[
            ev("a1", "2024-06-01", "referral"),
            ev("a2", "2024-05-01", "review"),
            ev("a3", "2024-06-21", "nps", 9),
            ev("p8", "2024-06-21", "nps", 8),  # a passive: no advocacy
        ],
    )
    assert got["a1"] == ("advocacy", 30)
    assert got["a2"] == ("advocacy", 61)
    assert got["a3"] == ("advocacy", 10)
    assert got["p8"][0] == "retention"


def test_advocacy_needs_retention(tmp_path: Path) -> None:
    got = stage_of(
        tmp_path,
        "2024-07-01",
        transactions=[tx("once", "2024-06-01", 5.0)],
        events=[ev("once", "2024-06-02", "review"), ev("lead", "2024-06-02", "referral")],
    )
    assert got["once"][0] == "purchase"
    assert got["lead"][0] == "awareness"


def test_churned_after_the_inactivity_window_boundary(tmp_path: Path) -> None:
    # 180 days before 2024-07-01 is 2024-01-03: a purchase that day is still inside the window.
    got = stage_of(
        tmp_path,
        "2024-07-01",
        transactions=[tx("in", "2024-01-03T23:00:00", 5.0), tx("out", "2024-01-02T12:00:00", 5.0)],
    )
    assert got["in"] == ("purchase", 180)
    assert got["out"] == ("churned", 0)  # churned on 2024-07-01 itself


def test_churned_by_explicit_cancel_after_last_purchase(tmp_path: Path) -> None:
    got = stage_of(
        tmp_path,
        "2024-07-01",
        transactions=[
            tx(c, d, 5.0) for c in ("c", "k") for d in ("2024-05-01", "2024-06-01T10:00:00")
        ],
        events=[ev("c", "2024-06-01T11:00:00", "cancel"), ev("k", "2024-06-01T09:00:00", "cancel")],
    )
    assert got["c"] == ("churned", 30)
    assert got["k"][0] == "retention"  # bought again after cancelling


def test_never_bought_is_never_churned(tmp_path: Path) -> None:
    got = stage_of(
        tmp_path,
        "2024-07-01",
        events=[ev("l", "2020-01-01", "signup"), ev("l", "2020-01-02", "cancel")],
    )
    assert got["l"][0] == "consideration"


def test_thresholds_are_configurable(tmp_path: Path) -> None:
    settings = StageSettings(
        churn_inactivity_days=30,
        promoter_min_score=8,
        advocacy_lookback_days=10,
        lead_event_types=["demo_request"],
    )
    got = stage_of(
        tmp_path,
        "2024-07-01",
        transactions=[
            tx("x", "2024-05-01", 5.0),
            tx("y", "2024-06-20", 5.0),
            tx("y", "2024-06-25", 5.0),
        ],
        events=[
            ev("y", "2024-06-26", "nps", 8),
            ev("d", "2024-06-01", "demo_request"),
            ev("s", "2024-06-01", "signup"),
        ],
        settings=settings,
    )
    assert got["x"][0] == "churned"
    assert got["y"][0] == "advocacy"
    assert got["d"][0] == "consideration"
    assert got["s"][0] == "awareness"


def test_unknown_before_first_record(tmp_path: Path) -> None:
    got = stage_of(
        tmp_path,
        "2024-07-01",
        transactions=[tx("late", "2024-07-01", 5.0), tx("filler", "2024-01-01", 1.0)],
        customers=[{"customer_id": "future", "signup_date": "2024-07-01"}],
    )
    assert "late" not in got and "future" not in got


# --- one test per transition ------------------------------------------------------------------

JOURNEY_TX = [tx("j", "2024-02-01", 10.0), tx("j", "2024-03-01", 10.0)]
JOURNEY_EV = [
    ev("j", "2024-01-01", "visit"),
    ev("j", "2024-01-15", "signup"),
    ev("j", "2024-03-10", "review"),
]


def journey(
    tmp_path: Path, as_of: str, extra_tx: list[dict[str, object]] | None = None
) -> tuple[str, int]:
    return stage_of(tmp_path, as_of, transactions=JOURNEY_TX + (extra_tx or []), events=JOURNEY_EV)[
        "j"
    ]


def test_awareness_to_consideration(tmp_path: Path) -> None:
    assert journey(tmp_path / "a", "2024-01-15")[0] == "awareness"
    assert journey(tmp_path / "b", "2024-01-16") == ("consideration", 1)


def test_consideration_to_purchase(tmp_path: Path) -> None:
    assert journey(tmp_path / "a", "2024-02-01")[0] == "consideration"
    assert journey(tmp_path / "b", "2024-02-02") == ("purchase", 1)


def test_purchase_to_retention(tmp_path: Path) -> None:
    assert journey(tmp_path / "a", "2024-03-01")[0] == "purchase"
    assert journey(tmp_path / "b", "2024-03-02") == ("retention", 1)


def test_retention_to_advocacy(tmp_path: Path) -> None:
    assert journey(tmp_path / "a", "2024-03-10")[0] == "retention"
    assert journey(tmp_path / "b", "2024-03-11") == ("advocacy", 1)


def test_advocacy_back_to_retention_when_the_signal_ages_out(tmp_path: Path) -> None:
    # The review of 2024-03-10 counts for 365 days: as of 2025-03-10 it is 365 days old and
    # still counts; from 2025-03-11 it does not. Keep buying so inactivity does not intervene.
    buys = [tx("j", f"2025-0{m}-01", 10.0) for m in (1, 2, 3)]
    assert journey(tmp_path / "a", "2025-03-10", buys)[0] == "advocacy"
    assert journey(tmp_path / "b", "2025-03-11", buys) == ("retention", 0)
    assert journey(tmp_path / "c", "2025-03-12", buys) == ("retention", 1)


def test_retention_to_churned(tmp_path: Path) -> None:
    # Last purchase 2024-03-01: 180 days later is 2024-08-28; churned from 2024-08-29.
    assert journey(tmp_path / "a", "2024-08-28")[0] == "advocacy"
    assert journey(tmp_path / "b", "2024-08-29") == ("churned", 0)


def test_churned_back_to_retention_on_return(tmp_path: Path) -> None:
    back = [tx("j", "2025-04-01", 10.0)]  # after the review has aged out
    assert journey(tmp_path / "a", "2025-04-01", back)[0] == "churned"
    assert journey(tmp_path / "b", "2025-04-11", back) == ("retention", 10)


def test_purchase_to_churned(tmp_path: Path) -> None:
    got = stage_of(tmp_path, "2024-12-01", transactions=[tx("o", "2024-05-01", 5.0)])
    assert got["o"] == ("churned", 33)  # 214 days idle, churned since day 181


# --- days in stage over repeated signals -----------------------------------------------------


def test_advocacy_counts_from_the_start_of_an_unbroken_run_of_signals(tmp_path: Path) -> None:
    monthly = [tx("a", f"{y}-{m:02d}-01", 10.0) for y in (2023, 2024) for m in range(1, 13)]
    reviews = [ev("a", "2023-03-01", "review"), ev("a", "2024-01-01", "review")]
    # A second customer whose first signal expired before the next one: a new run.
    broken = [tx("b", "2022-01-01", 5.0), tx("b", "2022-02-01", 5.0), tx("b", "2024-05-01", 5.0)]
    broken_reviews = [ev("b", "2022-03-01", "review"), ev("b", "2024-04-01", "review")]
    got = stage_of(
        tmp_path, "2024-06-01", transactions=monthly + broken, events=reviews + broken_reviews
    )
    assert got["a"] == ("advocacy", 458)  # since 2023-03-01: the 2024 review continued the run
    assert got["b"] == ("advocacy", 31)  # since the return on 2024-05-01 (after a lapse)
    for as_of, days in (("2024-02-29", 365), ("2024-03-01", 366), ("2024-03-02", 367)):
        assert stage_of(tmp_path, as_of, transactions=monthly, events=reviews)["a"] == (
            "advocacy",
            days,
        )


def test_a_purchase_after_a_cancel_is_a_return_and_churn_counts_from_the_first_cancel(
    tmp_path: Path,
) -> None:
    transactions = [
        tx("back", "2024-01-01", 5.0), tx("back", "2024-02-01", 5.0),
        tx("back", "2024-04-01", 5.0),
        tx("gone", "2024-01-01", 5.0), tx("gone", "2024-02-01", 5.0),
    ]  # fmt: skip
    events = [
        ev("back", "2024-03-01", "cancel"),
        ev("gone", "2024-03-01", "cancel"), ev("gone", "2024-05-01", "cancel"),
    ]  # fmt: skip
    got = stage_of(tmp_path, "2024-06-01", transactions=transactions, events=events)
    assert got["back"] == ("retention", 61)  # since 2024-04-01, the purchase after the cancel
    assert got["gone"] == ("churned", 92)  # since 2024-03-01, the first cancel
