"""A seeded generator of realistic customer lifecycle data (transactions, events, customers).

The generative story, per person (all vectorised with NumPy):

* **Funnel.** A person arrives through an acquisition channel (visits, ad clicks), becomes a
  lead (signup, email subscription, cart) with a channel-dependent rate, and buys with another.
* **Repeat buying.** As in Pareto/NBD (Schmittlein, Morrison & Colombo 1987): each buyer's
  purchase rate ``lambda ~ Gamma(r, alpha)`` and dropout rate ``mu ~ Gamma(s, beta)``; purchases
  form a Poisson process (modulated by seasonality: a summer swell and a holiday peak) until an
  exponential lifetime ends. Spend per purchase is Gamma-Gamma (Fader, Hardie & Lee 2005): each
  buyer's mean spend is drawn from a gamma, each order from a gamma around it. Refunds follow
  some orders; some days have two orders.
* **Engagement that carries signal.** Sessions and email opens scale with the purchase rate
  and fade over the weeks before a customer drops out; support tickets cluster before dropout;
  NPS answers (0-10) follow a latent satisfaction that is higher for long-lived customers;
  satisfied customers write reviews and refer others; some leavers cancel explicitly.

The true parameters come back in :attr:`SyntheticData.truth` so tests can check what models learn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from clm.errors import DataError
from features.sources import SUFFIXES

__all__ = ["CHANNELS", "MARKER", "GeneratorParams", "SyntheticData", "generate", "write"]

# Written beside the tables: this folder's tables are sample data, and may be replaced.
MARKER = ".clm-sample"

CHANNELS = ("organic_search", "paid_search", "social", "referral", "email", "direct")
REGIONS = ("north", "south", "east", "west", "central")


@dataclass(frozen=True)
class GeneratorParams:
    """Population parameters (per-day rates); defaults give ~10 orders and ~20 events a person."""

    channel_share: tuple[float, ...] = (0.30, 0.20, 0.20, 0.08, 0.10, 0.12)
    lead_rate: tuple[float, ...] = (0.62, 0.55, 0.42, 0.80, 0.70, 0.65)
    buy_rate: tuple[float, ...] = (0.70, 0.62, 0.50, 0.82, 0.72, 0.68)
    purchase_shape: float = 1.2  # r of Pareto/NBD
    purchase_rate_scale: float = 1 / 19  # mean lambda = shape * scale (purchases per day)
    dropout_shape: float = 0.9  # s
    dropout_rate_scale: float = 1 / 700  # mean mu = shape * scale
    spend_p: float = 6.0  # Gamma-Gamma p, q, gamma (FHL 2005 notation)
    spend_q: float = 3.8
    spend_gamma: float = 15.0
    currency_scale: float = 1.6
    refund_rate: float = 0.03
    second_order_rate: float = 0.04
    session_ratio: float = 0.6  # sessions per purchase-rate unit
    email_every_days: float = 45.0
    cancel_share: float = 0.3


@dataclass
class SyntheticData:
    transactions: pa.Table
    events: pa.Table
    customers: pa.Table
    truth: pa.Table  # per person: the drawn rates, dropout time and latent satisfaction


@dataclass
class _Draws:
    """Per-person latent state, in days since ``start``."""

    n: int
    span: float
    arrival: np.ndarray
    channel: np.ndarray
    lead_at: np.ndarray  # nan when never a lead
    subscribed: np.ndarray
    first_buy: np.ndarray  # nan when never a buyer
    purchase_rate: np.ndarray
    dropout_at: np.ndarray  # end of activity (buyers: Pareto/NBD lifetime; leads: interest)
    mean_spend: np.ndarray
    satisfaction: np.ndarray


class _Rows:
    """Collects (person, time, value, kind, channel) rows of one table."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(
        self,
        who: np.ndarray,
        when: np.ndarray,
        kind: int | np.ndarray,
        value: np.ndarray | None = None,
        ch: int | np.ndarray | None = None,
    ) -> None:
        size = len(who)
        self.parts.append(
            (
                who.astype(np.int64),
                when.astype(np.float64),
                np.broadcast_to(np.asarray(kind, dtype=np.int16), size).copy(),
                np.broadcast_to(np.asarray(np.nan if value is None else value, np.float64), size),
                np.broadcast_to(np.asarray(-1 if ch is None else ch, np.int16), size),
            )
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate([p[i] for p in self.parts]) for i in range(5))


EVENT_TYPES = (
    "visit",
    "ad_click",
    "signup",
    "email_subscribe",
    "add_to_cart",
    "session",
    "email_sent",
    "email_open",
    "email_click",
    "support_ticket",
    "nps",
    "review",
    "referral",
    "cancel",
)
EV = {name: i for i, name in enumerate(EVENT_TYPES)}
EVENT_CHANNELS = ("web", "app", "email", "store", "phone", "chat", "ads")
TX_CHANNELS = ("web", "app", "store")


def _seasonality(days_since_start: np.ndarray, start: date) -> np.ndarray:
    """Relative purchase intensity: a summer swell and a late-November-December peak."""
    doy = (days_since_start + start.timetuple().tm_yday - 1) % 365.25
    holiday = ((doy >= 325) & (doy < 358)).astype(float)
    return 1.0 + 0.2 * np.sin(2 * np.pi * (doy - 100) / 365.25) + 0.6 * holiday


def _poisson_times(
    rng: np.random.Generator, begin: np.ndarray, end: np.ndarray, rate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson points per person on [begin, end): (person index, time)."""
    length = np.clip(end - begin, 0, None)
    counts = rng.poisson(np.nan_to_num(rate * length))
    who = np.repeat(np.arange(len(begin)), counts)
    return who, begin[who] + rng.random(len(who)) * length[who]


def _vitality(t: np.ndarray, dropout_at: np.ndarray, fade_days: float = 75.0) -> np.ndarray:
    """1 while active, fading linearly to 0.15 over ``fade_days`` before dropout, then 0.05."""
    left = dropout_at - t
    return np.where(left < 0, 0.05, np.clip(0.15 + 0.85 * left / fade_days, 0.15, 1.0))


def _draw_people(rng: np.random.Generator, n: int, span: float, p: GeneratorParams) -> _Draws:
    arrival = span * rng.random(n) ** 0.8  # a growing business: more arrivals lately
    channel = rng.choice(len(CHANNELS), size=n, p=np.array(p.channel_share) / sum(p.channel_share))
    is_lead = rng.random(n) < np.array(p.lead_rate)[channel]
    lead_at = np.where(is_lead, arrival + rng.exponential(4.0, n), np.nan)
    is_buyer = is_lead & (rng.random(n) < np.array(p.buy_rate)[channel])
    first_buy = np.where(is_buyer, lead_at + rng.exponential(12.0, n), np.nan)
    purchase_rate = rng.gamma(p.purchase_shape, p.purchase_rate_scale, n)
    dropout_rate = rng.gamma(p.dropout_shape, p.dropout_rate_scale, n)
    lifetime = rng.exponential(1.0, n) / dropout_rate
    lead_interest = rng.exponential(60.0, n)
    dropout_at = np.where(
        is_buyer, first_buy + lifetime, np.where(is_lead, lead_at + lead_interest, arrival + 3)
    )
    # Long-lived customers are happier: satisfaction tracks -log(mu) plus noise.
    log_mu = np.log(dropout_rate)
    satisfaction = -0.8 * (log_mu - log_mu.mean()) / log_mu.std() + 0.6 * rng.standard_normal(n)
    mean_spend = p.currency_scale * p.spend_p / rng.gamma(p.spend_q, 1 / p.spend_gamma, n)
    return _Draws(
        n=n,
        span=span,
        arrival=arrival,
        channel=channel,
        lead_at=lead_at,
        subscribed=is_lead & (rng.random(n) < 0.6),
        first_buy=first_buy,
        purchase_rate=purchase_rate,
        dropout_at=dropout_at,
        mean_spend=mean_spend,
        satisfaction=satisfaction,
    )


def _purchases(
    rng: np.random.Generator, d: _Draws, p: GeneratorParams, start: date
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order times and amounts of every buyer: first purchase plus repeat purchases."""
    buyers = np.flatnonzero(~np.isnan(d.first_buy) & (d.first_buy < d.span))
    peak = 1.8
    who, when = _poisson_times(
        rng,
        d.first_buy[buyers],
        np.minimum(d.dropout_at[buyers], d.span),
        d.purchase_rate[buyers] * peak,
    )
    keep = rng.random(len(when)) < _seasonality(when, start) / peak
    who = np.concatenate([buyers, buyers[who[keep]]])
    when = np.concatenate([d.first_buy[buyers], when[keep]])
    extra = rng.random(len(who)) < p.second_order_rate  # a second order on the same day
    who = np.concatenate([who, who[extra]])
    when = np.concatenate([when, np.floor(when[extra]) + rng.random(extra.sum()) * 0.999])
    when = np.clip(when, np.floor(when), np.nextafter(np.floor(when) + 1, 0))
    amount = np.round(rng.gamma(p.spend_p, d.mean_spend[who] / p.spend_p) + 0.01, 2)
    return who, when, amount


def _transactions(
    rng: np.random.Generator, d: _Draws, p: GeneratorParams, start: date, rows: _Rows
) -> tuple[np.ndarray, np.ndarray]:
    who, when, amount = _purchases(rng, d, p, start)
    favourite = rng.integers(0, len(TX_CHANNELS), d.n)
    channel = np.where(rng.random(len(who)) < 0.8, favourite[who], rng.integers(0, 3, len(who)))
    rows.add(who, when, 0, amount, channel)
    refunded = rng.random(len(who)) < p.refund_rate
    share = np.where(rng.random(refunded.sum()) < 0.7, 1.0, 0.5)
    refund_at = when[refunded] + rng.uniform(2, 25, refunded.sum())
    rows.add(who[refunded], refund_at, 1, -np.round(amount[refunded] * share, 2), channel[refunded])
    return who, when


def _funnel_events(rng: np.random.Generator, d: _Draws, rows: _Rows) -> None:
    everyone = np.arange(d.n)
    paid = np.isin(d.channel, [CHANNELS.index("paid_search"), CHANNELS.index("social")])
    rows.add(
        everyone, d.arrival, np.where(paid, EV["ad_click"], EV["visit"]), ch=np.where(paid, 6, 0)
    )
    who, when = _poisson_times(rng, d.arrival, d.arrival + 14, np.full(d.n, 1.2 / 14))
    rows.add(who, when, EV["visit"], ch=0)
    leads = np.flatnonzero(~np.isnan(d.lead_at))
    rows.add(leads, d.lead_at[leads], EV["signup"], ch=0)
    subs = np.flatnonzero(d.subscribed)
    rows.add(subs, d.lead_at[subs] + rng.exponential(1.0, len(subs)), EV["email_subscribe"], ch=2)
    # Carts: before a first purchase, and abandoned by some leads who never buy.
    non_buyers = leads[np.isnan(d.first_buy[leads]) & (rng.random(len(leads)) < 0.45)]
    rows.add(
        non_buyers,
        d.lead_at[non_buyers] + rng.exponential(6.0, len(non_buyers)),
        EV["add_to_cart"],
        ch=0,
    )


def _engagement_events(
    rng: np.random.Generator,
    d: _Draws,
    p: GeneratorParams,
    buys: tuple[np.ndarray, np.ndarray],
    rows: _Rows,
) -> None:
    buy_who, buy_when = buys
    carts = rng.random(len(buy_who)) < 0.3
    rows.add(
        buy_who[carts], buy_when[carts] - rng.random(carts.sum()) * 0.05, EV["add_to_cart"], ch=0
    )
    # Sessions: proportional to the purchase rate, fading before dropout, rare afterwards.
    active_from = np.where(np.isnan(d.lead_at), d.arrival, d.lead_at)
    session_rate = p.session_ratio * d.purchase_rate + 0.004
    who, when = _poisson_times(rng, active_from, np.full(d.n, d.span), session_rate)
    keep = rng.random(len(when)) < _vitality(when, d.dropout_at[who])
    rows.add(who[keep], when[keep], EV["session"], ch=rng.integers(0, 2, keep.sum()))
    # Email campaigns to subscribers; opens and clicks follow vitality and satisfaction.
    subs = np.flatnonzero(d.subscribed)
    who, when = _poisson_times(
        rng,
        d.lead_at[subs] + 1,
        np.full(len(subs), d.span),
        np.full(len(subs), 1 / p.email_every_days),
    )
    who = subs[who]
    rows.add(who, when, EV["email_sent"], ch=2)
    engaged = 1 / (1 + np.exp(-d.satisfaction[who]))
    opened = rng.random(len(who)) < 0.55 * _vitality(when, d.dropout_at[who]) * (
        0.4 + 0.6 * engaged
    )
    open_at = when[opened] + rng.exponential(0.5, opened.sum())
    rows.add(who[opened], open_at, EV["email_open"], ch=2)
    clicked = rng.random(opened.sum()) < 0.3
    rows.add(who[opened][clicked], open_at[clicked] + 0.001, EV["email_click"], ch=2)
    _voice_events(rng, d, buys, rows)


def _voice_events(
    rng: np.random.Generator, d: _Draws, buys: tuple[np.ndarray, np.ndarray], rows: _Rows
) -> None:
    """Support tickets, NPS answers, reviews, referrals and cancellations."""
    buy_who, buy_when = buys
    ticket = rng.random(len(buy_who)) < 0.03
    rows.add(
        buy_who[ticket],
        buy_when[ticket] + rng.exponential(5, ticket.sum()),
        EV["support_ticket"],
        ch=rng.choice([4, 5], ticket.sum()),
    )
    leavers = np.flatnonzero(~np.isnan(d.first_buy) & (d.dropout_at < d.span))
    troubled = leavers[rng.random(len(leavers)) < 0.5]
    who, when = _poisson_times(
        rng, d.dropout_at[troubled] - 60, d.dropout_at[troubled], np.full(len(troubled), 1.2 / 60)
    )
    rows.add(troubled[who], when, EV["support_ticket"], ch=rng.choice([4, 5], len(who)))
    surveyed = rng.random(len(buy_who)) < 0.15
    who, when = buy_who[surveyed], buy_when[surveyed] + rng.uniform(1, 8, surveyed.sum())
    mood = 7.4 + 1.5 * d.satisfaction[who] - 3.0 * (1 - _vitality(when, d.dropout_at[who]))
    score = np.clip(np.round(rng.normal(mood, 1.1)), 0, 10)
    rows.add(who, when, EV["nps"], value=score, ch=2)
    happy = 1 / (1 + np.exp(-3 * (d.satisfaction[buy_who] - 0.9)))
    review = rng.random(len(buy_who)) < 0.08 * happy
    rows.add(
        buy_who[review], buy_when[review] + rng.uniform(2, 15, review.sum()), EV["review"], ch=0
    )
    refer = rng.random(len(buy_who)) < 0.05 * happy
    rows.add(
        buy_who[refer], buy_when[refer] + rng.uniform(1, 30, refer.sum()), EV["referral"], ch=1
    )
    cancels = leavers[rng.random(len(leavers)) < 0.3]
    rows.add(
        cancels,
        d.dropout_at[cancels] + rng.uniform(0, 5, len(cancels)),
        EV["cancel"],
        ch=rng.choice([0, 4], len(cancels)),
    )


def _ids(prefix: str, n: int) -> pa.Array:
    width = max(6, len(str(n)))
    numbers = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
    padded = pc.utf8_lpad(numbers, width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), padded, "")


def _timestamps(start: date, days: np.ndarray) -> pa.Array:
    base = np.datetime64(datetime(start.year, start.month, start.day), "us").astype(np.int64)
    seconds = np.floor(days * 86_400).astype(np.int64)  # exports keep whole seconds
    return pa.array(base + seconds * 1_000_000, pa.timestamp("us", tz="UTC"))


def _table(
    rows: _Rows, d: _Draws, start: date, customer_ids: pa.Array, names: tuple[str, ...], is_tx: bool
) -> pa.Table:
    who, when, kind, value, channel = rows.arrays()
    inside = (when >= 0) & (when < d.span)
    order = np.lexsort((who[inside], when[inside]))
    who, when, kind, value, channel = (a[inside][order] for a in (who, when, kind, value, channel))
    columns: dict[str, pa.Array] = {
        "customer_id": customer_ids.take(pa.array(who)),
        "timestamp": _timestamps(start, when),
    }
    if is_tx:
        columns["order_id"] = _ids("O", len(who))
        columns["amount"] = pa.array(value)
    else:
        columns["event_type"] = pa.array(names).take(pa.array(kind.astype(np.int32)))
        columns["value"] = pa.array(value, mask=np.isnan(value))
    channel_names = TX_CHANNELS if is_tx else EVENT_CHANNELS
    columns["channel"] = pa.array(channel_names).take(pa.array(channel.astype(np.int32)))
    return pa.table(columns)


def _customers_table(rng: np.random.Generator, d: _Draws, start: date, ids: pa.Array) -> pa.Table:
    leads = np.flatnonzero(~np.isnan(d.lead_at) & (d.lead_at < d.span))
    signup = _timestamps(start, d.lead_at[leads]).cast(pa.timestamp("us")).cast(pa.date32())
    return pa.table(
        {
            "customer_id": ids.take(pa.array(leads)),
            "signup_date": signup,
            "acquisition_channel": pa.array(CHANNELS).take(
                pa.array(d.channel[leads].astype(np.int32))
            ),
            "region": pa.array(REGIONS).take(
                pa.array(rng.integers(0, len(REGIONS), len(leads)).astype(np.int32))
            ),
            "age": pa.array(np.clip(np.round(rng.normal(40, 12, len(leads))), 18, 90)),
        }
    )


def generate(
    customers: int, *, seed: int, start: date, end: date, params: GeneratorParams | None = None
) -> SyntheticData:
    """Draw ``customers`` people who arrive in ``[start, end)`` and their logs up to ``end``."""
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if end <= start:
        raise ValueError(f"end {end} must be after start {start}")
    p = params or GeneratorParams()
    rng = np.random.default_rng(seed)
    d = _draw_people(rng, customers, float((end - start).days), p)
    ids = _ids("C", customers)
    tx_rows, ev_rows = _Rows(), _Rows()
    buys = _transactions(rng, d, p, start, tx_rows)
    _funnel_events(rng, d, ev_rows)
    _engagement_events(rng, d, p, buys, ev_rows)
    truth = pa.table(
        {
            "customer_id": ids,
            "acquisition_channel": pa.array(CHANNELS).take(pa.array(d.channel.astype(np.int32))),
            "purchase_rate_per_day": d.purchase_rate,
            "dropout_day": d.dropout_at,
            "is_buyer": ~np.isnan(d.first_buy) & (d.first_buy < d.span),
            "mean_spend": d.mean_spend,
            "satisfaction": d.satisfaction,
        }
    )
    return SyntheticData(
        transactions=_table(tx_rows, d, start, ids, (), True),
        events=_table(ev_rows, d, start, ids, EVENT_TYPES, False),
        customers=_customers_table(rng, d, start, ids),
        truth=truth,
    )


def write(
    data: SyntheticData, out: Path, *, fmt: str = "parquet", replace: bool = False
) -> dict[str, Path]:
    """Write transactions, events and customers as ``fmt`` files into ``out``.

    A table file already in ``out`` is replaced only when an earlier ``write`` wrote it and
    it is unchanged since (the marker file beside it records each file's size and time), or
    with ``replace``: any other may be a user's own data, and is refused with its name.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {fmt!r}")
    tables = ("transactions", "events", "customers")
    names = {f"{name}{suffix}" for name in tables for suffix in SUFFIXES}
    if out.is_dir() and not replace:
        ours = _written(out)
        taken = sorted(
            p.name
            for p in out.iterdir()
            if p.name.lower() in names and ours.get(p.name) != _stamp(p)
        )
        if taken:
            raise DataError(
                f"{out}: holds {', '.join(taken)}, not written by clm data generate; refusing "
                "to replace them (choose another folder, or pass --force to replace them)"
            )
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in tables:
        table: pa.Table = getattr(data, name)
        # A table's file of another format (or in another case) would be read twice.
        for stale in (p for p in out.iterdir() if p.name.lower() in {name + s for s in SUFFIXES}):
            stale.unlink()
        path = out / f"{name}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            pacsv.write_csv(_iso(table), path)
        written[name] = path
    stamps = {p.name: _stamp(p) for p in written.values()}
    (out / MARKER).write_text(json.dumps({"written_by": "clm data generate", "files": stamps}))
    return written


def _stamp(path: Path) -> list[int]:
    """What says a file is unchanged since it was written: its size and modification time."""
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def _written(out: Path) -> dict[str, list[int]]:
    """The files an earlier ``write`` put in ``out``, with their stamps (none if unknown)."""
    try:
        files = json.loads((out / MARKER).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _iso(table: pa.Table) -> pa.Table:
    """Timestamps as ISO 8601 text with a Z, as most exports write them."""
    for i, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type):
            seconds = table.column(i).cast(pa.timestamp("s", tz="UTC"))
            text = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")
            table = table.set_column(i, column.name, text)
    return table
