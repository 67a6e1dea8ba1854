"""Small builders for hand-made logs: every test states its rows."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from clm.settings import ClmSettings
from features.snapshots import build_snapshot
from features.sources import Dataset, load

TX_COLUMNS = ["customer_id", "timestamp", "amount"]
EV_COLUMNS = ["customer_id", "timestamp", "event_type"]


def write_tables(folder: Path, **tables: list[dict[str, object]] | pd.DataFrame) -> Path:
    """Write each table as CSV (``transactions=[{...}, ...]``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


def tx(customer: str, when: str, amount: float, **extra: object) -> dict[str, object]:
    return {"customer_id": customer, "timestamp": when, "amount": amount, **extra}


def ev(customer: str, when: str, event_type: str, value: float | None = None, **extra: object):  # type: ignore[no-untyped-def]
    return {
        "customer_id": customer,
        "timestamp": when,
        "event_type": event_type,
        "value": value,
        **extra,
    }


def dataset(folder: Path, **tables: list[dict[str, object]]) -> Dataset:
    if "transactions" not in tables:
        tables["transactions"] = [tx("nobody", "2000-01-01", 1.0)]
    return load(write_tables(folder, **tables))


def features(
    folder: Path,
    as_of: str,
    settings: ClmSettings | None = None,
    labels: bool = False,
    **tables: list[dict[str, object]],
) -> pd.DataFrame:
    """Build the snapshot of a hand-made log, indexed by customer_id."""
    data = dataset(folder, **tables)
    frame = build_snapshot(
        data, as_of=date.fromisoformat(as_of), settings=settings or ClmSettings(), labels=labels
    )
    return frame.set_index("customer_id")


def workbook(path: Path, *sheets: tuple[str, list[list[object]]]) -> None:
    """An Excel workbook with these sheets (title, rows), as a spreadsheet saves it."""
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets:
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
