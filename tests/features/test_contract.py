"""The data contract: clear errors naming file, row, column and expected form; nothing dropped."""

from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from clm.errors import DataError
from features.sources import load
from tests.helpers import ev, tx, workbook, write_tables


def good_transactions(n: int = 3) -> list[dict[str, object]]:
    return [tx(f"c{i}", f"2024-01-0{i + 1}", 10.0 + i, order_id=f"o{i}") for i in range(n)]


def test_valid_folder_loads_every_row_typed(tmp_path: Path) -> None:
    folder = write_tables(
        tmp_path,
        transactions=good_transactions(),
        events=[ev("c0", "2024-01-01T10:00:00", "visit"), ev("c1", "2024-01-02", "nps", 9)],
        customers=[{"customer_id": "c0", "signup_date": "2023-12-01", "tier": "gold", "age": 31}],
    )
    data = load(folder)
    assert data.row_counts == {"transactions": 3, "events": 2, "customers": 1}
    row = data.con.execute(
        "SELECT customer_id, ts, amount FROM transactions ORDER BY ts"
    ).fetchall()
    assert [r[2] for r in row] == [10.0, 11.0, 12.0]
    assert data.attributes == {"attr_tier": "category", "attr_age": "numeric"}


def test_missing_required_column_names_file_column_and_fix(tmp_path: Path) -> None:
    folder = write_tables(tmp_path, transactions=[{"customer_id": "a", "amount": 3}])
    with pytest.raises(DataError) as err:
        load(folder)
    message = str(err.value)
    assert "transactions.csv" in message
    assert "required column 'timestamp' missing" in message
    assert "columns found: customer_id, amount" in message
    assert "--column transactions.timestamp=NAME" in message


def test_unparseable_timestamps_are_listed_with_rows_and_count(tmp_path: Path) -> None:
    rows = [
        *good_transactions(2),
        tx("c", "yesterday", 1, order_id="x1"),
        tx("c", "2024-13-45", 1, order_id="x2"),
    ]
    rows += [tx("c", "", 1, order_id=f"y{i}") for i in range(5)]
    with pytest.raises(DataError) as err:
        load(write_tables(tmp_path, transactions=rows))
    message = str(err.value)
    assert message.startswith("transactions.csv: column 'timestamp': 7 value(s)")
    # Data row 3 is line 4 of the file (line 1 is the header).
    assert "row 3 (line 4) 'yesterday'" in message
    assert "row 4 (line 5) '2024-13-45'" in message
    assert "and 2 more" in message
    assert "ISO date or datetime" in message


def test_unparseable_and_non_finite_amounts(tmp_path: Path) -> None:
    rows = [*good_transactions(1), tx("a", "2024-01-01", "abc"), tx("b", "2024-01-01", "inf")]
    rows += [tx("c", "2024-01-01", "1e308"), tx("d", "2024-01-01", "-1e15")]
    rows += [tx("e", "2024-01-01", "999999999999999.9")]  # under 10^15: kept
    rows += [tx("f", "2024-01-01", "1_000")]  # Python's digit groups: no export's number
    with pytest.raises(DataError) as err:
        load(write_tables(tmp_path, transactions=rows))
    message = str(err.value)
    assert "column 'amount': 5 value(s) not a finite number under 10^15 in size" in message
    assert "row 7 (line 8) '1_000'" in message
    assert "row 2 (line 3) 'abc'" in message and "row 3 (line 4) 'inf'" in message
    assert "row 4 (line 5) '1e308'" in message and "row 5 (line 6) '-1e15'" in message


def test_empty_customer_id(tmp_path: Path) -> None:
    rows = [*good_transactions(2), tx("  ", "2024-01-01", 5.0)]
    with pytest.raises(DataError, match=r"column 'customer_id': 1 value\(s\) empty .* row 3"):
        load(write_tables(tmp_path, transactions=rows))


def test_duplicate_order_ids_name_every_row(tmp_path: Path) -> None:
    rows = [*good_transactions(3), tx("c9", "2024-02-01", 4.0, order_id="o1")]
    with pytest.raises(DataError) as err:
        load(write_tables(tmp_path, transactions=rows))
    message = str(err.value)
    assert "column 'order_id': 2 rows share a value" in message
    assert "row 2 (line 3) 'o1'" in message and "row 4 (line 5) 'o1'" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    rows = [tx("", "never", "x", order_id="o")]
    with pytest.raises(DataError) as err:
        load(write_tables(tmp_path, transactions=rows))
    parts = str(err.value).split("; ")
    assert [p.split(":")[1].strip() for p in parts] == [
        "column 'customer_id'",
        "column 'timestamp'",
        "column 'amount'",
    ]


def test_parquet_rows_are_numbered_from_one(tmp_path: Path) -> None:
    frame = pd.DataFrame(good_transactions(3))
    frame.loc[1, "amount"] = None
    frame.to_parquet(tmp_path / "transactions.parquet")
    with pytest.raises(DataError, match=r"transactions.parquet: column 'amount'.*: row 2 "):
        load(tmp_path)


def test_bad_optional_event_value_is_an_error_but_empty_is_missing(tmp_path: Path) -> None:
    events = [ev("a", "2024-01-01", "nps", None), ev("a", "2024-01-02", "nps", "ten")]
    with pytest.raises(DataError, match=r"events.csv: column 'value'.* row 2 \(line 3\) 'ten'"):
        load(write_tables(tmp_path, transactions=good_transactions(), events=events))


def test_duplicate_customers(tmp_path: Path) -> None:
    customers = [{"customer_id": "a"}, {"customer_id": "b"}, {"customer_id": "a"}]
    with pytest.raises(DataError, match=r"customers\.csv: column 'customer_id': 2 rows share"):
        load(write_tables(tmp_path, transactions=good_transactions(), customers=customers))


def test_timestamps_with_offsets_become_utc_and_naive_means_utc(tmp_path: Path) -> None:
    rows = [
        tx("a", "2024-03-01T23:30:00-02:00", 1.0),
        tx("b", "2024-03-01 10:00:00", 1.0),
        tx("c", "2024-03-01", 1.0),
        tx("d", "2024-03-01T10:00:00Z", 1.0),
    ]
    data = load(write_tables(tmp_path, transactions=rows))
    got = dict(
        data.con.execute(
            "SELECT customer_id, strftime(ts, '%Y-%m-%d %H:%M') FROM transactions"
        ).fetchall()
    )
    assert got == {
        "a": "2024-03-02 01:30",
        "b": "2024-03-01 10:00",
        "c": "2024-03-01 00:00",
        "d": "2024-03-01 10:00",
    }


def test_column_mapping_renames_and_errors_name_the_source_column(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"client": ["a", "b"], "order_date": ["2024-01-01", "bad"], "total": [1.0, 2.0]}
    )
    write_tables(tmp_path, transactions=frame)
    mapping = {"*": {"customer_id": "client"}, "transactions": {"timestamp": "order_date"}}
    with pytest.raises(DataError, match=r"column 'order_date' \(mapped to timestamp\)"):
        load(
            tmp_path,
            columns={**mapping, "transactions": {**mapping["transactions"], "amount": "total"}},
        )
    frame.loc[1, "order_date"] = "2024-01-02"
    write_tables(tmp_path, transactions=frame)
    data = load(
        tmp_path,
        columns={**mapping, "transactions": {"timestamp": "order_date", "amount": "total"}},
    )
    assert data.row_counts["transactions"] == 2


def test_columns_and_mappings_in_another_case_are_the_ones_meant(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"Customer_ID": ["a", "b"], "TIMESTAMP": ["2024-01-01", "bad"], "Total": [1.0, 2.0]}
    )
    write_tables(tmp_path, transactions=frame)
    # The contract's names in another case, a mapping to 'total' for the column 'Total'.
    with pytest.raises(DataError, match=r"column 'TIMESTAMP' \(mapped to timestamp\): 1 value"):
        load(tmp_path, columns={"*": {"amount": "total"}})
    frame.loc[1, "TIMESTAMP"] = "2024-01-02"
    write_tables(tmp_path, transactions=frame.assign(CHANNEL=["web", "app"]))
    data = load(
        tmp_path, columns={"*": {"amount": "total"}, "transactions": {"channel": "channel"}}
    )
    rows = data.con.execute("SELECT customer_id, amount, channel FROM transactions ORDER BY 1")
    assert rows.fetchall() == [("a", 1.0, "web"), ("b", 2.0, "app")]
    assert data.mappings["transactions"] == {
        "amount": "Total", "customer_id": "Customer_ID", "timestamp": "TIMESTAMP",
        "channel": "CHANNEL",
    }  # fmt: skip


def test_one_source_column_mapped_to_two_contract_columns_is_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame({"client": ["a"], "order_date": ["2024-01-01"], "total": [1.0]})
    write_tables(tmp_path, transactions=frame)
    mapping = {"*": {"customer_id": "total", "timestamp": "order_date"}}
    with pytest.raises(DataError) as both:
        load(tmp_path, columns={**mapping, "transactions": {"amount": "total"}})
    assert str(both.value) == (
        "column mapping for transactions: column 'total' is mapped to amount and customer_id; "
        "a column maps to one contract column"
    )


def test_mapping_to_an_unknown_contract_column_is_refused(tmp_path: Path) -> None:
    write_tables(tmp_path, transactions=good_transactions())
    with pytest.raises(DataError, match="'price' is not a contract column"):
        load(tmp_path, columns={"transactions": {"price": "amount"}})


def test_missing_transactions_and_ambiguous_files(tmp_path: Path) -> None:
    write_tables(tmp_path, events=[ev("a", "2024-01-01", "visit")])
    (tmp_path / "orders.csv").write_text("customer_id,timestamp,amount\n")
    with pytest.raises(DataError) as missing, pytest.warns(UserWarning, match="orders.csv: not"):
        load(tmp_path)
    assert str(missing.value) == (
        f"{tmp_path}: no transactions table (expected transactions.csv or transactions.parquet; "
        "the folder holds events.csv, orders.csv)"
    )
    (tmp_path / "orders.csv").unlink()
    write_tables(tmp_path, transactions=good_transactions())
    pd.DataFrame(good_transactions()).to_parquet(tmp_path / "Transactions.parquet")
    with pytest.raises(DataError, match="more than one file for table transactions"):
        load(tmp_path)


def test_table_names_match_in_any_case_and_unread_look_alikes_are_named(tmp_path: Path) -> None:
    write_tables(tmp_path, Transactions=good_transactions(), event=[ev("a", "2024-01-01", "x")])
    (tmp_path / "EVENTS.CSV").write_text("customer_id,timestamp,event_type\na,2024-01-02,visit\n")
    (tmp_path / "customers.xls").write_bytes(b"\xd0\xcf")
    (tmp_path / "notes.md").write_text("not a table")
    with pytest.warns(UserWarning) as caught:
        dataset = load(tmp_path)
    assert dataset.sources == {"transactions": "Transactions.csv", "events": "EVENTS.CSV"}
    assert dataset.row_counts == {"transactions": 3, "events": 1}
    assert sorted(str(w.message) for w in caught) == [
        f"{tmp_path / 'customers.xls'}: not read (.xls is not a table format; save it as "
        "customers.csv or .parquet)",
        f"{tmp_path / 'event.csv'}: not read (table files are named transactions, events, "
        "customers, with .parquet, .pq, .csv, .csv.gz, .jsonl, .ndjson, .jsonl.gz, .ndjson.gz, "
        ".xlsx)",
    ]


def test_a_transactions_file_with_a_header_only_is_refused(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text("customer_id,timestamp,amount\n")
    with pytest.raises(DataError) as empty:
        load(tmp_path)
    assert str(empty.value) == (
        "transactions.csv: no rows (a header only); transactions needs at least one"
    )
    # An optional table may be empty.
    write_tables(tmp_path, transactions=good_transactions())
    (tmp_path / "events.csv").write_text("customer_id,timestamp,event_type\n")
    assert load(tmp_path).row_counts["events"] == 0


def test_duckdb_database_source(tmp_path: Path) -> None:
    path = tmp_path / "shop.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE transactions AS SELECT * FROM (VALUES "
            "('a', TIMESTAMP '2024-01-01 10:00:00', 5.0), ('b', NULL, 2.0)) "
            "AS t(customer_id, timestamp, amount)"
        )
    with pytest.raises(DataError, match=r"shop.duckdb:transactions: column 'timestamp'.* row 2"):
        load(path)
    with duckdb.connect(str(path)) as con:
        con.execute(
            "UPDATE transactions SET timestamp = TIMESTAMP '2024-01-02' WHERE customer_id = 'b'"
        )
    assert load(path).row_counts == {"transactions": 2}


def test_bom_and_gzip_csv_files_are_read(tmp_path: Path) -> None:
    import gzip

    text = "customer_id,timestamp,amount\na,2024-01-01,5\nb,2024-01-02,7\n"
    (tmp_path / "transactions.csv.gz").write_bytes(gzip.compress(("\ufeff" + text).encode()))
    data = load(tmp_path)
    assert data.row_counts == {"transactions": 2}
    assert data.sources["transactions"] == "transactions.csv.gz"


def test_bad_signup_date_is_named_and_an_empty_one_is_missing(tmp_path: Path) -> None:
    customers = [
        {"customer_id": "a", "signup_date": "2023-13-01"},
        {"customer_id": "b", "signup_date": ""},
    ]
    with pytest.raises(
        DataError,
        match=r"customers.csv: column 'signup_date': 1 value.*row 1 \(line 2\) '2023-13-01'",
    ):
        load(write_tables(tmp_path, transactions=good_transactions(), customers=customers))


def test_csv_lines_count_blank_lines_and_values_that_span_lines(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount,order_id\n"
        "a,2024-01-01,10,O1\n"
        "\n"
        "b,2024-01-02,x,O2\n"
        'c,2024-01-03,5,"O\n3"\n'
        "d,2024-01-04,5,O1\n"
    )
    with pytest.raises(DataError) as error:
        load(tmp_path)
    message = str(error.value)
    assert "column 'amount': 1 value(s) not a finite number" in message
    assert "row 2 (line 4) 'x'" in message  # the blank line 3 is no row
    assert "row 1 (line 2) 'O1', row 4 (line 7) 'O1'" in message  # row 3 spans lines 5-6


def test_mapping_without_a_table_is_checked_against_every_contract(tmp_path: Path) -> None:
    write_tables(
        tmp_path,
        transactions=[tx("a", "2024-01-01", 1.0, ref="web")],
        events=[ev("a", "2024-01-01", "visit", channel="app")],
    )
    with pytest.raises(DataError, match="'ordr_id' is not a contract column of any table"):
        load(tmp_path, columns={"*": {"ordr_id": "ref"}})
    with pytest.raises(DataError, match="order_id=reff: no table has a column 'reff'"):
        load(tmp_path, columns={"*": {"order_id": "reff"}})
    # Applied where the file has the column; a table with the contract's own name keeps it.
    data = load(tmp_path, columns={"*": {"channel": "ref"}})
    assert data.con.sql("SELECT channel FROM transactions").fetchall() == [("web",)]
    assert data.con.sql("SELECT channel FROM events").fetchall() == [("app",)]


def test_a_mapped_optional_column_that_is_missing_is_an_error(tmp_path: Path) -> None:
    write_tables(tmp_path, transactions=[tx("a", "2024-01-01", 1.0, ref="R1")])
    with pytest.raises(
        DataError,
        match=r"transactions.csv: column mapping transactions.order_id=reff: no column 'reff' "
        r"\(columns found: customer_id, timestamp, amount, ref\)",
    ):
        load(tmp_path, columns={"transactions": {"order_id": "reff"}})
    assert load(tmp_path, columns={"transactions": {"order_id": "ref"}}).row_counts == {
        "transactions": 1
    }


def test_duckdb_views_other_schemas_and_any_case(tmp_path: Path) -> None:
    rows = "SELECT 'a' AS customer_id, TIMESTAMP '2024-01-01' AS timestamp, 5.0 AS amount"
    view, schema, upper, none = (tmp_path / f"{n}.duckdb" for n in ("v", "s", "u", "n"))
    with duckdb.connect(str(view)) as con:
        con.execute(f"CREATE TABLE t AS {rows} UNION ALL SELECT 'b', NULL, 1.0")
        con.execute("CREATE VIEW transactions AS SELECT * FROM t")
    with pytest.raises(DataError, match=r"v.duckdb:transactions: column 'timestamp'.* row 2"):
        load(view)
    with duckdb.connect(str(schema)) as con:
        con.execute(f"CREATE SCHEMA sales; CREATE TABLE sales.transactions AS {rows}")
    assert load(schema).sources == {"transactions": "s.duckdb:sales.transactions"}
    with duckdb.connect(str(upper)) as con:
        con.execute(f'CREATE TABLE "Transactions" AS {rows}')
    assert load(upper).row_counts == {"transactions": 1}
    with duckdb.connect(str(none)) as con:
        con.execute("CREATE TABLE orders AS SELECT 1 AS a")
    with pytest.raises(DataError, match=r"no transactions table in the database \(tables: main"):
        load(none)


def test_a_csv_that_is_not_utf8_and_a_data_file_as_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "transactions.csv"
    path.write_bytes("customer_id,timestamp,amount\nRen\xe9,2024-01-01,5\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"transactions\.csv: not (UTF-8 text|a readable CSV)"):
        load(tmp_path)
    path.write_bytes("customer_id,timestamp,amount\xe9\na,2024-01-01,5\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"transactions\.csv: not UTF-8 text"):
        load(tmp_path)
    with pytest.raises(DataError, match="a data file; pass the folder that holds it"):
        load(path)


def test_a_float_id_column_reads_whole_numbers_as_integer_text(tmp_path: Path) -> None:
    # pandas writes integer ids with a gap as float64: 2474 becomes 2474.0.
    pd.DataFrame(
        {
            "customer_id": [2474.0, 12.0, 3.0],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
            "amount": [1.0, 2.0, 3.0],
        }
    ).to_parquet(tmp_path / "transactions.parquet")
    pd.DataFrame({"customer_id": [2474, 12], "tier": ["a", "b"]}).to_parquet(
        tmp_path / "customers.parquet"
    )
    data = load(tmp_path)
    joined = data.con.execute(
        "SELECT t.customer_id, c.attr_tier FROM transactions t "
        "JOIN customers c USING (customer_id) ORDER BY 1"
    ).fetchall()
    assert joined == [("12", "b"), ("2474", "a")]


def test_a_fractional_or_missing_float_id_is_named(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "customer_id": [1.0, 2474.5, None],
            "timestamp": pd.to_datetime(["2024-01-01"] * 3),
            "amount": [1.0, 2.0, 3.0],
            "order_id": [7.0, 8.25, None],
        }
    ).to_parquet(tmp_path / "transactions.parquet")
    with pytest.raises(DataError) as err:
        load(tmp_path)
    message = str(err.value)
    assert "column 'customer_id': 1 value(s) empty" in message and "row 3 ''" in message
    assert "column 'customer_id': 1 value(s) not a whole number" in message
    assert "row 2 '2474.5'" in message
    # order_id is optional: missing is fine, 8.25 is not an id.
    assert "column 'order_id': 1 value(s) not a whole number" in message
    assert "row 2 '8.25'" in message


def test_ids_of_other_types_and_boolean_amounts_are_refused(tmp_path: Path) -> None:
    base = {"timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]), "amount": [1.0, 2.0]}
    pd.DataFrame({"customer_id": [True, False], **base}).to_parquet(
        tmp_path / "transactions.parquet"
    )
    with pytest.raises(DataError, match=r"column 'customer_id' has type BOOLEAN; expected a"):
        load(tmp_path)
    pd.DataFrame({"customer_id": ["a", "b"], **base, "amount": [True, False]}).to_parquet(
        tmp_path / "transactions.parquet"
    )
    with pytest.raises(DataError, match=r"column 'amount' has type BOOLEAN; expected a finite"):
        load(tmp_path)


def test_an_infinite_event_value_in_parquet_is_named_not_dropped(tmp_path: Path) -> None:
    pd.DataFrame(good_transactions()).to_parquet(tmp_path / "transactions.parquet")
    pd.DataFrame(
        {
            "customer_id": ["c0", "c1", "c2", "c0"],
            "timestamp": pd.to_datetime(["2024-01-01"] * 4),
            "event_type": ["nps"] * 4,
            "value": [9.0, float("inf"), None, float("-inf")],  # None: no answer
        }
    ).to_parquet(tmp_path / "events.parquet")
    with pytest.raises(DataError) as err:
        load(tmp_path)
    message = str(err.value)
    assert message.startswith("events.parquet: column 'value': 2 value(s) not a finite number")
    assert (
        "(expected a finite number under 10^15 in size such as 8 (an NPS answer is 0-10))"
        in message
    )
    assert "row 2 'inf'" in message and "row 4 '-inf'" in message


def test_a_repeated_csv_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount,amount\na,2024-01-01,1,2\n"
    )
    with pytest.raises(DataError) as err:
        load(tmp_path)
    assert str(err.value) == (
        "transactions.csv: line 1: column 'amount' appears twice: fields 3 and 4 of the header "
        "(expected each column name once)"
    )
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount,Customer_ID\na,2024-01-01,1,b\n"
    )
    with pytest.raises(DataError, match="columns 'customer_id' and 'Customer_ID' name one column"):
        load(tmp_path)
    # The empty names of a spreadsheet's trailing commas are no columns of the contract.
    (tmp_path / "transactions.csv").write_text("customer_id,timestamp,amount,,\na,2024-01-01,1,,\n")
    assert load(tmp_path).row_counts["transactions"] == 1


def test_a_mapping_for_a_table_the_data_lacks_is_refused(tmp_path: Path) -> None:
    folder = write_tables(tmp_path, transactions=good_transactions())
    with pytest.raises(DataError) as err:
        load(folder, columns={"customers": {"signup_date": "joined"}})
    assert str(err.value) == (
        f"column mapping customers.signup_date=joined: {folder} has no customers table "
        "(tables read: transactions.csv)"
    )


def test_all_null_enum_and_decimal_id_columns_read_as_ids(tmp_path: Path) -> None:
    base = {"timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]), "amount": [1.0, 2.0]}
    # A pandas column of None only: DuckDB types it "NULL"; an optional id with no values.
    pd.DataFrame({"customer_id": ["a", "b"], **base, "order_id": [None, None]}).to_parquet(
        tmp_path / "transactions.parquet"
    )
    assert load(tmp_path).row_counts["transactions"] == 2
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TYPE kind AS ENUM ('visit', 'nps')")
    con.execute(
        "CREATE TABLE transactions AS SELECT CAST('1' || repeat('0', 30) AS DECIMAL(38, 0)) AS customer_id, "
        "TIMESTAMP '2024-01-01' AS timestamp, 5.0 AS amount"
    )
    con.execute(
        "CREATE TABLE events AS SELECT CAST('1' || repeat('0', 30) AS DECIMAL(38, 0)) AS customer_id, "
        "TIMESTAMP '2024-01-02' AS timestamp, CAST('nps' AS kind) AS event_type, "
        "CAST(9 AS BIGINT) AS value"
    )
    con.close()
    data = load(db)
    assert data.con.execute("SELECT customer_id, event_type, value FROM events").fetchall() == [
        ("1000000000000000000000000000000", "nps", 9.0)
    ]


def test_an_integer_event_value_of_10_to_the_15_or_more_is_named(tmp_path: Path) -> None:
    pd.DataFrame(good_transactions()).to_parquet(tmp_path / "transactions.parquet")
    pd.DataFrame(
        {
            "customer_id": ["c0", "c1"],
            "timestamp": pd.to_datetime(["2024-01-01"] * 2),
            "event_type": ["nps", "visit"],
            "score": pd.array([9, 10**16], dtype="Int64"),
        }
    ).to_parquet(tmp_path / "events.parquet")
    with pytest.raises(DataError) as err:
        load(tmp_path, columns={"events": {"value": "score"}})
    assert str(err.value).startswith(
        "events.parquet: column 'score' (mapped to value): 1 value(s) not a finite number "
        "under 10^15 in size"
    )
    assert "row 2 '10000000000000000'" in str(err.value)


def test_a_float_id_of_2_to_the_53_or_more_is_named(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "customer_id": [1.0, 1e20],
            "timestamp": pd.to_datetime(["2024-01-01"] * 2),
            "amount": [1.0, 2.0],
        }
    ).to_parquet(tmp_path / "transactions.parquet")
    with pytest.raises(DataError, match=r"1 value\(s\) not a whole number below 2\^53 in size"):
        load(tmp_path)


def test_customer_rows_no_log_names_and_without_signup_are_warned_about(tmp_path: Path) -> None:
    write_tables(
        tmp_path,
        transactions=[tx("007", "2024-01-03", 5.0), tx("8", "2024-01-04", 3.0)],
        events=[ev("10", "2024-01-05", "visit")],
    )
    customers = pd.DataFrame(
        {
            "customer_id": [7.0, 8.0, 9.0, 10.0, 11.0, 12.0],
            "signup_date": [None, None, None, None, "2024-01-01", None],
        }
    )
    customers.to_parquet(tmp_path / "customers.parquet")
    with pytest.warns(UserWarning) as caught:
        dataset = load(tmp_path)
    assert [str(w.message) for w in caught] == [
        "customers.parquet: 3 customer rows match no transaction or event and have no "
        "signup_date ('7' (row 1), '9' (row 3), '12' (row 6)): never scored; check that ids "
        "are written the same way in every table"
    ]
    assert dataset.row_counts["customers"] == 6  # kept, not dropped


def test_semicolon_and_tab_separated_exports_are_read(tmp_path: Path) -> None:
    for delimiter in (";", "\t"):
        text = delimiter.join(["customer_id", "timestamp", "amount"]) + "\n"
        text += delimiter.join(["a", "2024-01-01", "5.5"]) + "\n"
        text += delimiter.join(['"b,c"', "2024-01-02", "-2"]) + "\n"
        (tmp_path / "transactions.csv").write_text(text)
        dataset = load(tmp_path)
        rows = dataset.con.execute(
            "SELECT customer_id, amount FROM transactions ORDER BY _row"
        ).fetchall()
        assert rows == [("a", 5.5), ("b,c", -2.0)], delimiter
    # A quoted name may hold another separator; a quoted line break moves the lines on.
    (tmp_path / "transactions.csv").write_text(
        'customer_id;"amount, EUR";timestamp\n"a\nb";1;2024-01-01\nc;x;2024-01-02\n'
    )
    with pytest.raises(DataError, match=r"row 2 \(line 4\) 'x'"):
        load(tmp_path, columns={"transactions": {"amount": "amount, EUR"}})
    # A ';'-separated file is a European spreadsheet's: a decimal comma is read (amounts and
    # attributes); a number with both marks is named as a bad amount, with its row and line.
    (tmp_path / "transactions.csv").write_text(
        "customer_id;timestamp;amount\na;2024-01-01;25,50\nb;2024-01-02;-3.5\n"
    )
    (tmp_path / "customers.csv").write_text("customer_id;score\na;1,5\nb;2\n")
    dataset = load(tmp_path)
    amounts = dataset.con.execute("SELECT amount FROM transactions ORDER BY _row").fetchall()
    assert amounts == [(25.5,), (-3.5,)]
    assert dataset.attributes == {"attr_score": "numeric"}
    scores = dataset.con.execute("SELECT attr_score FROM customers ORDER BY _row").fetchall()
    assert scores == [(1.5,), (2.0,)]
    (tmp_path / "customers.csv").unlink()
    # Points that group by three before a decimal comma are thousands marks.
    (tmp_path / "transactions.csv").write_text(
        "customer_id;timestamp;amount\na;2024-01-01;1.234,56\nb;2024-01-02;-12.345.678,9\n"
    )
    amounts = load(tmp_path).con.execute("SELECT amount FROM transactions ORDER BY _row")
    assert amounts.fetchall() == [(1234.56,), (-12345678.9,)]
    # Points alone (1.234) beside decimal commas are a thousand times apart as thousands
    # marks or decimal points: named, for amounts and numeric attributes, not guessed.
    (tmp_path / "transactions.csv").write_text(
        "customer_id;timestamp;amount\na;2024-01-01;25,50\nb;2024-01-02;1.234\n"
        "c;2024-01-03;3.5\nd;2024-01-04;-12.000\n"
    )
    with pytest.raises(DataError) as mixed:
        load(tmp_path)
    assert str(mixed.value) == (
        "transactions.csv: column 'amount': 2 value(s) with points only in a column with "
        "decimal commas (1 value(s) such as 12,50), read a thousand times apart as thousands "
        "marks or as decimal points (expected 1234 or 1.234,00 for one thousand two hundred "
        "thirty-four, 1,234 for one point two three four): row 2 (line 3) '1.234', "
        "row 4 (line 5) '-12.000'"
    )
    (tmp_path / "transactions.csv").write_text(
        "customer_id;timestamp;amount\na;2024-01-01;25,50\nb;2024-01-02;3.5\n"
    )
    (tmp_path / "customers.csv").write_text("customer_id;score\na;1,5\nb;2.000\n")
    with pytest.raises(
        DataError, match=r"customers.csv: column 'score': 1 value.*row 2 \(line 3\) '2.000'"
    ):
        load(tmp_path)
    (tmp_path / "customers.csv").unlink()
    # With no decimal comma in the column, points are decimal points.
    (tmp_path / "transactions.csv").write_text(
        "customer_id;timestamp;amount\na;2024-01-01;25.50\nb;2024-01-02;1.234\n"
    )
    amounts = load(tmp_path).con.execute("SELECT amount FROM transactions ORDER BY _row")
    assert amounts.fetchall() == [(25.5,), (1.234,)]
    # Both marks any other way are named as bad amounts, with their rows and lines.
    (tmp_path / "transactions.csv").write_text(
        "customer_id;timestamp;amount\na;2024-01-01;1,234.56\nb;2024-01-02;12.34,5\n"
    )
    with pytest.raises(
        DataError, match=r"column 'amount'.*row 1 \(line 2\) '1,234.56', row 2 \(line 3\) '12.34,5'"
    ):
        load(tmp_path)
    # In a ','-separated file a comma in a number is no decimal mark (1,234 may be a thousand).
    (tmp_path / "transactions.csv").write_text(
        'customer_id,timestamp,amount\na,2024-01-01,"25,00"\n'
    )
    with pytest.raises(DataError, match=r"column 'amount'.*row 1 \(line 2\) '25,00'"):
        load(tmp_path)


def test_two_attribute_columns_that_name_one_feature_are_both_named(tmp_path: Path) -> None:
    write_tables(
        tmp_path,
        transactions=good_transactions(),
        customers=pd.DataFrame(
            {"customer_id": ["a"], "loyalty_tier": ["x"], "Loyalty Tier": ["y"]}
        ),
    )
    with pytest.raises(DataError) as clash:
        load(tmp_path)
    assert str(clash.value) == (
        "customers.csv: columns 'loyalty_tier' and 'Loyalty Tier' both become "
        "attr_loyalty_tier; rename one"
    )


def test_pandas_tz_aware_parquet_and_offsets_after_a_space_read_as_utc(tmp_path: Path) -> None:
    # pandas writes tz-aware datetimes as timestamp[ns, tz=...]; DuckDB reads TIMESTAMPTZ_NS.
    moments = pd.to_datetime(["2024-03-01 12:30:00+02:00", "2024-03-02 08:00:00+00:00"], utc=True)
    pd.DataFrame(
        {"customer_id": ["a", "b"], "timestamp": moments, "amount": [1.0, 2.0]}
    ).to_parquet(tmp_path / "transactions.parquet")
    signups = pd.to_datetime(["2023-12-31 23:00:00-05:00"], utc=True)
    pd.DataFrame({"customer_id": ["a"], "signup_date": signups}).to_parquet(
        tmp_path / "customers.parquet"
    )
    data = load(tmp_path)
    got = data.con.execute("SELECT customer_id, CAST(ts AS VARCHAR) FROM transactions").fetchall()
    assert sorted(got) == [("a", "2024-03-01 10:30:00"), ("b", "2024-03-02 08:00:00")]
    (signup,) = data.con.execute("SELECT CAST(signup_date AS VARCHAR) FROM customers").fetchone()
    assert signup == "2024-01-01 04:00:00"
    # Shopify's export: an offset after a space, with or without seconds' fractions.
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "transactions.csv").write_text(
        "customer_id,timestamp,amount\na,2024-03-01 14:30:00 -0500,1\n"
        "b,2024-03-01 14:30:00.5 +05:30,1\nc,2024-03-01 14:30:00-0500,1\n"
    )
    got = load(csv).con.execute("SELECT customer_id, CAST(ts AS VARCHAR) FROM transactions")
    assert sorted(got.fetchall()) == [
        ("a", "2024-03-01 19:30:00"), ("b", "2024-03-01 09:00:00.5"), ("c", "2024-03-01 19:30:00"),
    ]  # fmt: skip


def test_placeholder_dates_outside_1900_to_2199_are_named(tmp_path: Path) -> None:
    rows = [*good_transactions(), tx("x", "9999-12-31", 1.0), tx("y", "0001-01-01", 1.0)]
    with pytest.raises(
        DataError,
        match=r"column 'timestamp': 2 value\(s\) not an ISO date or datetime from 1900 to 2199 "
        r".*row 4 \(line 5\) '9999-12-31', row 5 \(line 6\) '0001-01-01'",
    ):
        load(write_tables(tmp_path / "csv", transactions=rows))
    # In Parquet too, and an optional date is not silently made missing.
    folder = tmp_path / "parquet"
    folder.mkdir()
    pd.DataFrame(good_transactions()).assign(
        timestamp=lambda f: pd.to_datetime(f["timestamp"])
    ).to_parquet(folder / "transactions.parquet")
    pd.DataFrame(
        {"customer_id": ["c0", "c1"], "signup_date": pd.to_datetime(["2023-01-01", "2262-01-01"])}
    ).to_parquet(folder / "customers.parquet")
    with pytest.raises(DataError, match=r"customers.parquet: column 'signup_date': 1 value.*row 2"):
        load(folder)


def test_rows_dated_after_today_and_orders_of_amount_0_are_warned_about(tmp_path: Path) -> None:
    rows = [
        *good_transactions(),
        tx("z", "2024-02-01", 0.0),
        tx("f", "2099-01-01", 5.0),
        tx("z", "2024-02-03", 0.0),
    ]
    with pytest.warns(UserWarning) as caught:
        data = load(write_tables(tmp_path, transactions=rows))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert (
        messages[0].startswith("transactions.csv: 1 row(s) dated after today (")
        and "row 5 (line 6) 2099-01-01 00:00:00; they are read as given" in messages[0]
    )
    assert messages[1] == (
        "transactions.csv: 2 row(s) with amount 0 (row 4 (line 5) 2024-02-01 00:00:00, "
        "row 6 (line 7) 2024-02-03 00:00:00): neither a purchase (amount > 0) nor a refund "
        "(< 0), so they count in no purchase, spend or refund feature (only as activity)"
    )
    assert data.row_counts["transactions"] == 6  # kept, as given
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(write_tables(tmp_path / "clean", transactions=good_transactions()))
    # Rows without order ids that repeat a row's customer, time and amount: a line-item
    # export's order totals, said (same-priced items bought together look the same).
    lines = [
        tx("a", "2024-01-01 10:00:00", 50.0),
        tx("a", "2024-01-01 10:00:00", 50.0),
        tx("b", "2024-01-02 11:00:00", 3.0),
        tx("a", "2024-01-01 10:00:00", 50.0),
        tx("b", "2024-01-03 11:00:00", 3.0),
    ]
    with pytest.warns(UserWarning) as caught:
        data = load(write_tables(tmp_path / "lines", transactions=lines))
    assert [str(w.message) for w in caught] == [
        "transactions.csv: 2 row(s) repeat an earlier row's customer, time and amount exactly, "
        "with no order id: row 2 (line 3) (a, 2024-01-01 10:00:00, 50), row 4 (line 5) (a, "
        "2024-01-01 10:00:00, 50); each adds its amount to the spend. A line-item export "
        "repeats the order's total on every line: keep one row per order, or map its order "
        "number (--column order_id=NAME) to have repeats refused"
    ]
    assert data.row_counts["transactions"] == 5  # kept, as given
    # Dates without a time of day repeat often (two coffees a day): nothing to say.
    days = [tx("a", "2024-01-01", 5.0), tx("a", "2024-01-01", 5.0), tx("b", "2024-01-02", 3.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(write_tables(tmp_path / "days", transactions=days))
    # Ids written in another case in another table: each spelling is a customer of its own.
    with pytest.warns(UserWarning) as caught:
        load(
            write_tables(
                tmp_path / "case",
                transactions=[
                    tx("ann@shop.com", "2024-01-01", 5.0),
                    tx("bo@x.org", "2024-01-02", 3.0),
                ],
                customers=pd.DataFrame({"customer_id": ["Ann@Shop.com", "bo@x.org", "Cy@x.org"]}),
            )
        )
    assert [str(w.message) for w in caught if "case" in str(w.message)] == [
        "1 customer id(s) are written in another case elsewhere in the data ('Ann@Shop.com' ~ "
        "'ann@shop.com'): each spelling is a customer of its own; write ids the same way in "
        "every table (emails in lower case, say)"
    ]
    # A signup after today too: the customer is known from then on.
    customers = pd.DataFrame({"customer_id": ["c0", "c1"], "signup_date": ["2099-01-01", ""]})
    with pytest.warns(UserWarning) as caught:
        load(
            write_tables(tmp_path / "signup", transactions=good_transactions(), customers=customers)
        )
    (message,) = [str(w.message) for w in caught]
    assert message.startswith("customers.csv: 1 signup date(s) after today (") and message.endswith(
        "): row 1 (line 2) 2099-01-01 00:00:00; a customer is known from the signup on, so these "
        "have no signup or attributes at any cutoff before it"
    )


def test_missing_value_markers_are_missing_and_codes_with_leading_zeros_stay_text(
    tmp_path: Path,
) -> None:
    rows = [*good_transactions(), tx("NULL", "2024-01-05", 1.0), tx(" n/a ", "2024-01-06", 1.0)]
    with pytest.raises(
        DataError,
        match=r"column 'customer_id': 2 value\(s\) empty or a missing-value marker "
        r"\(NULL, N/A, \.\.\.\).*row 4 \(line 5\) 'NULL', row 5 \(line 6\) ' n/a '",
    ):
        load(write_tables(tmp_path / "ids", transactions=rows))
    rows = [
        tx("a", "2024-01-02", 1.0, channel="N/A"),
        tx("b", "2024-01-03", 1.0, channel="web"),
        tx("NA", "2024-01-04", 1.0, channel="-"),  # 'NA' is a code (North America), not missing
    ]
    customers = [
        {"customer_id": "a", "age": "34", "zip": "01234", "tier": "None"},
        {"customer_id": "b", "age": "N/A", "zip": "20500", "tier": "gold"},
    ]
    data = load(write_tables(tmp_path / "ok", transactions=rows, customers=customers))
    channels = data.con.execute("SELECT customer_id, channel FROM transactions").fetchall()
    assert sorted(channels) == [("NA", None), ("a", None), ("b", "web")]
    assert data.attributes == {
        "attr_age": "numeric",
        "attr_zip": "category",
        "attr_tier": "category",
    }
    got = data.con.execute(
        "SELECT customer_id, attr_age, attr_zip, attr_tier FROM customers ORDER BY 1"
    ).fetchall()
    assert got == [("a", 34.0, "01234", None), ("b", None, "20500", "gold")]
    # Optional dates, numbers and order ids written as a marker are missing; an order id
    # given twice is still a duplicate, and a required date or amount still refused.
    rows = [
        tx("a", "2024-01-02", 1.0, order_id="N/A"),
        tx("b", "2024-01-03", 1.0, order_id="N/A"),
        tx("b", "2024-01-04", 1.0, order_id="o1"),
    ]
    customers = [
        {"customer_id": "a", "signup_date": "NULL"},
        {"customer_id": "b", "signup_date": "2023-05-01"},
    ]
    events = [
        {"customer_id": "a", "timestamp": "2024-01-02", "event_type": "nps", "value": "n/a"},
        {"customer_id": "b", "timestamp": "2024-01-02", "event_type": "nps", "value": "9"},
    ]
    data = load(
        write_tables(tmp_path / "more", transactions=rows, customers=customers, events=events)
    )
    signups = data.con.execute("SELECT customer_id, signup_date FROM customers ORDER BY 1")
    assert signups.fetchall() == [("a", None), ("b", datetime(2023, 5, 1))]
    values = data.con.execute("SELECT customer_id, value FROM events ORDER BY 1").fetchall()
    assert values == [("a", None), ("b", 9.0)]
    with pytest.raises(
        DataError, match=r"'order_id': 2 rows share a value .*: row 3 \(line 4\) 'o1', row 4"
    ):
        load(write_tables(tmp_path / "twice", transactions=[*rows, tx("c", "2024-01-05", 1.0,
                                                                        order_id="o1")]))  # fmt: skip
    for column, value in (("timestamp", "NULL"), ("amount", "N/A")):
        bad = [tx("a", "2024-01-02", 1.0), {**tx("b", "2024-01-03", 1.0), column: value}]
        with pytest.raises(DataError, match=rf"column '{column}': 1 value\(s\) not .*{value}"):
            load(write_tables(tmp_path / column, transactions=bad))


def test_a_csv_record_with_another_number_of_fields_is_named_by_its_line(tmp_path: Path) -> None:
    lines = ["customer_id,timestamp,amount", *(f"c{i},2024-03-01,1" for i in range(3000))]
    lines[2001] = 'c1,"2024-03-01",1,oops'
    (tmp_path / "transactions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DataError,
        match=r"^transactions.csv: not a readable CSV file \(line 2002 has 4 fields, the header 3",
    ):
        load(tmp_path)
    lines[2001] = "c1;2024-03-01"  # too few
    (tmp_path / "transactions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"\(line 2002 has 1 fields, the header 3"):
        load(tmp_path)


def test_csv_header_names_are_trimmed_like_values(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text(" customer_id , timestamp,amount \na,2024-01-01,5\n")
    rows = load(tmp_path).con.execute("SELECT customer_id, amount FROM transactions").fetchall()
    assert rows == [("a", 5.0)]
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount, amount\na,2024-01-01,5,6\n"
    )
    with pytest.raises(DataError, match=r"columns 'amount' and ' amount' name one column"):
        load(tmp_path)


def test_attributes_that_change_over_time_or_name_each_customer_are_warned_about_and_excludable(
    tmp_path: Path,
) -> None:
    n = 60
    rows = [tx(f"c{i}", "2024-01-02", 5.0) for i in range(n)]
    customers = [
        {
            "customer_id": f"c{i}",
            "Total Spent": 10.0 * i,
            "Email": f"u{i}@x.io",
            "tier": "ab"[i % 2],
            "OrderCount": i % 5,  # camelCase: the words are order, count
            "LastName": "xyz"[i % 3],  # no value that changes
        }
        for i in range(n)
    ]
    folder = write_tables(tmp_path, transactions=rows, customers=customers)
    with pytest.warns(UserWarning) as caught:
        data = load(folder)
    assert [str(w.message) for w in caught] == [
        "customers.csv: attribute column(s) 'Total Spent', 'OrderCount' look like values that "
        "change over "
        "time: attributes are read as they are now at every past cutoff, so a running total, a "
        "last-order date or a status leaks the outcome into training (list them in "
        "data.exclude_attributes)",
        "customers.csv: attribute column(s) 'Email' have a different value for nearly every "
        "customer (an email, a name): as categories they carry no signal (list them in "
        "data.exclude_attributes)",
    ]
    assert set(data.attributes) == {
        "attr_total_spent", "attr_email", "attr_tier", "attr_ordercount", "attr_lastname"
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = load(folder, exclude_attributes=["total spent", "EMAIL", "ordercount"])
    assert kept.attributes == {"attr_tier": "category", "attr_lastname": "category"}
    assert "attr_email" not in [r[0] for r in kept.con.execute("DESCRIBE customers").fetchall()]
    with pytest.raises(
        DataError, match=r"data.exclude_attributes: 'emial' is not a column of customers.csv"
    ):
        load(folder, exclude_attributes=["emial"])
    (folder / "customers.csv").unlink()  # no table to exclude them from: said, not ignored
    with pytest.raises(DataError, match=r"'Email': .* has no customers table to exclude them"):
        load(folder, exclude_attributes=["Email"])


def test_orders_with_a_void_status_count_only_as_activity(tmp_path: Path) -> None:
    from datetime import date

    from clm.settings import ClmSettings
    from features.snapshots import build_snapshot

    rows = [
        tx("a", "2024-01-05", 30.0, order_id="o1", status="paid"),
        tx("a", "2024-01-20", 45.0, order_id="o2", status=" Cancelled "),  # any case, trimmed
        tx("a", "2024-01-25", -30.0, order_id="o3", status="FAILED"),  # a failed refund
        tx("b", "2024-01-07", 12.0, order_id="o4", status=None),  # no status: a purchase
        tx("b", "2024-01-08", 8.0, order_id="o5", status="pending"),  # not void by default
    ]
    folder = write_tables(tmp_path, transactions=rows)
    with pytest.warns(UserWarning) as caught:
        data = load(folder)
    (message,) = [str(w.message) for w in caught]
    assert message == (
        "transactions.csv: 2 row(s) with a status that is no purchase (data.void_statuses: "
        "row 2 (line 3) Cancelled, row 3 (line 4) FAILED): read as amount 0, they count in no "
        "purchase, spend or refund feature (only as activity)"
    )
    amounts = data.con.execute("SELECT order_id, amount FROM transactions ORDER BY _row")
    assert amounts.fetchall() == [("o1", 30.0), ("o2", 0.0), ("o3", 0.0), ("o4", 12.0), ("o5", 8.0)]
    built = build_snapshot(data, as_of=date(2024, 2, 1), settings=ClmSettings())
    built = built.set_index("customer_id")
    assert built.loc["a", "purchase_days"] == 1 and built.loc["a", "total_spend"] == 30.0
    assert built.loc["a", "refund_count"] == 0 and built.loc["a", "days_since_last_purchase"] == 27
    assert built.loc["b", "purchase_days"] == 2 and built.loc["b", "total_spend"] == 20.0
    assert built.loc["a", "active_days_90d"] == 3  # the cancelled and failed days: activity
    # The statuses are a setting; none at all reads every row as written.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = load(folder, void_statuses=[])
    assert kept.con.execute("SELECT sum(amount) FROM transactions").fetchone() == (65.0,)
    with pytest.warns(UserWarning, match=r"1 row\(s\) with a status .*row 5 \(line 6\) pending"):
        load(folder, void_statuses=["Pending"])


def test_a_status_column_by_another_name_is_warned_about_until_mapped(tmp_path: Path) -> None:
    rows = [tx("a", "2024-01-05", 30.0, financial_status="voided")]
    folder = write_tables(tmp_path, transactions=rows)
    with pytest.warns(UserWarning) as caught:
        load(folder)
    assert [str(w.message) for w in caught] == [
        "transactions.csv: column 'financial_status' looks like an order status but is not "
        "read as one: map it (--column status='financial_status') so that cancelled, voided "
        "and failed orders (data.void_statuses) count as no purchase"
    ]
    with pytest.warns(UserWarning, match=r"1 row\(s\) with a status that is no purchase"):
        data = load(folder, columns={"transactions": {"status": "financial_status"}})
    assert data.con.execute("SELECT amount FROM transactions").fetchall() == [(0.0,)]
    order_state = [tx("a", "2024-01-05", 30.0, **{"Order State": "paid"})]
    with pytest.warns(UserWarning, match="column 'Order State' looks like an order status"):
        load(write_tables(tmp_path / "state", transactions=order_state))
    unrelated = [tx("a", "2024-01-05", 30.0, statusline="x", estate="y", state="NY")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(write_tables(tmp_path / "other", transactions=unrelated))


def test_a_business_time_zone_makes_days_and_cutoffs_its_own(tmp_path: Path) -> None:
    from datetime import date

    from clm.settings import ClmSettings
    from features.snapshots import build_snapshot

    rows = [
        tx("a", "2024-03-01 20:30:00", 10.0),  # naive: New York's local time
        tx("a", "2024-03-02T03:30:00Z", 20.0),  # 22:30 on 1 March in New York
        tx("a", "2024-03-02 04:30:00 +0000", 30.0),  # 23:30 on 1 March: before the cutoff
        tx("a", "2024-03-02 00:30:00-05:00", 40.0),  # 2 March: at the cutoff, left out
        tx("b", "2024-02-10", 5.0),  # a date is that local day
    ]
    folder = write_tables(tmp_path / "csv", transactions=rows)
    data = load(folder, timezone="America/New_York")
    got = data.con.execute("SELECT CAST(ts AS VARCHAR) FROM transactions ORDER BY _row")
    assert [r[0] for r in got.fetchall()] == [
        "2024-03-01 20:30:00", "2024-03-01 22:30:00", "2024-03-01 23:30:00",
        "2024-03-02 00:30:00", "2024-02-10 00:00:00",
    ]  # fmt: skip
    built = build_snapshot(data, as_of=date(2024, 3, 2), settings=ClmSettings())
    built = built.set_index("customer_id")
    assert built.loc["a", "purchase_days"] == 1 and built.loc["a", "total_spend"] == 60.0
    assert built.loc["b", "days_since_last_purchase"] == 21
    # In UTC (the default) the same rows are two purchase days before the cutoff, one of 10.
    utc = build_snapshot(load(folder), as_of=date(2024, 3, 2), settings=ClmSettings())
    assert utc.set_index("customer_id").loc["a", "total_spend"] == 10.0
    # Parquet moments with a zone (pandas' tz-aware datetimes) are converted too, DST included.
    moments = pd.to_datetime(["2024-07-01 03:00:00+00:00", "2024-01-01 03:00:00+00:00"], utc=True)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    pd.DataFrame(
        {"customer_id": ["a", "b"], "timestamp": moments, "amount": [1.0, 2.0]}
    ).to_parquet(parquet / "transactions.parquet")
    got = load(parquet, timezone="America/New_York").con.execute(
        "SELECT CAST(ts AS VARCHAR) FROM transactions ORDER BY customer_id"
    )
    assert [r[0] for r in got.fetchall()] == ["2024-06-30 23:00:00", "2023-12-31 22:00:00"]
    with pytest.raises(DataError, match=r"^data.timezone: unknown time zone 'Mars/Base' \("):
        load(folder, timezone="Mars/Base")
    with pytest.raises(ValueError, match=r"unknown time zone 'New York' \(expected an IANA"):
        ClmSettings(data={"timezone": "New York"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown time zone 'localtime'"):  # a file, no zone
        ClmSettings(data={"timezone": "localtime"})  # type: ignore[arg-type]
    # What a day is and what a purchase is are part of what a model's features mean.
    from clm.settings import feature_meaning, meaning_changes

    trained = feature_meaning(ClmSettings())
    now = ClmSettings(
        data={"timezone": "Asia/Tokyo", "void_statuses": ["VOID"], "amount_scale": 0.01}
    )  # type: ignore[arg-type]
    assert meaning_changes(trained, feature_meaning(now)) == [
        'data.timezone = "UTC" (now "Asia/Tokyo")',
        'data.void_statuses = ["canceled", "cancelled", "declined", "failed", "void", "voided"] '
        '(now ["void"])',
    ]  # an export in cents read with amount_scale means the same amounts


def test_load_with_reads_every_data_setting(tmp_path: Path) -> None:
    from clm.settings import DataSettings
    from features.sources import load_with

    rows = [{"client": "a", "timestamp": "2024-03-02T03:30:00Z", "amount": 1999, "state": "ok"}]
    folder = write_tables(tmp_path, transactions=rows)
    settings = DataSettings(
        columns={"transactions": {"customer_id": "client", "status": "state"}},
        amount_scale=0.01,
        timezone="America/New_York",
        void_statuses=["ok"],
    )
    with pytest.warns(UserWarning, match=r"1 row\(s\) with a status that is no purchase"):
        data = load_with(folder, settings)
    assert data.con.execute(
        "SELECT customer_id, CAST(ts AS VARCHAR), amount FROM transactions"
    ).fetchall() == [("a", "2024-03-01 22:30:00", 0.0)]
    settings.void_statuses = []
    got = load_with(folder, settings).con.execute("SELECT amount FROM transactions").fetchone()
    assert got == (pytest.approx(19.99),)


def test_json_lines_files_read_as_their_csv_twins(tmp_path: Path) -> None:
    import gzip
    import json
    from datetime import date

    from clm.settings import ClmSettings
    from features.snapshots import build_snapshot

    tables = {
        "transactions": [
            tx("A1", "2024-03-01T10:00:00Z", 19.99, order_id="o1"),
            tx("007", "2024-03-02", 5.0, order_id="o2", channel="app"),
            tx("A1", "2024-03-05 10:00:00 -0500", -4.0, order_id="o3"),
        ],
        "events": [ev("A1", "2024-03-01", "nps", 9), ev("B", "2024-03-03", "visit")],
        "customers": [{"customer_id": "A1", "signup_date": "2024-01-01", "tier": "gold"}],
    }
    csv = write_tables(tmp_path / "csv", **tables)
    lines = tmp_path / "jsonl"
    lines.mkdir()
    for name, rows in tables.items():
        text = "".join(
            json.dumps({k: v for k, v in r.items() if v is not None}) + "\n\n" for r in rows
        )
        if name == "events":
            (lines / "events.ndjson.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (lines / f"{name}.jsonl").write_text(text)
    as_of, settings = date(2024, 4, 1), ClmSettings()
    expected = build_snapshot(load(csv), as_of=as_of, settings=settings)
    data = load(lines)
    assert data.sources == {
        "transactions": "transactions.jsonl", "events": "events.ndjson.gz",
        "customers": "customers.jsonl",
    }  # fmt: skip
    pd.testing.assert_frame_equal(build_snapshot(data, as_of=as_of, settings=settings), expected)
    # Rows are records (blank lines are none), numbered from 1 in messages.
    (lines / "transactions.jsonl").write_text(
        '{"customer_id": "A", "timestamp": "2024-03-01", "amount": 1}\n\n'
        '{"customer_id": "B", "timestamp": "yesterday", "amount": 1}\n'
    )
    with pytest.raises(
        DataError,
        match=r"^transactions.jsonl: column 'timestamp': 1 value\(s\) .* row 2 'yesterday'$",
    ):
        load(lines)
    # A key named like the record number's column is a column like any other.
    (lines / "transactions.jsonl").write_text(
        '{"customer_id": "A", "timestamp": "2024-03-01", "amount": 1, "_record": 9, "__record": 1}\n'
    )
    assert load(lines).con.execute("SELECT _row FROM transactions").fetchall() == [(1,)]
    for text, message in (
        ('{"customer_id": "A", "timestamp": 2024-03-01, "amount": 1}\n',
         r"not a readable JSON lines file \(line 1: not JSON: Expecting ',' delimiter"),
        ('{"customer_id": "A", "timestamp": "2024-03-01", "amount": 1}\n[1, 2]\n',
         r"row 2: not a JSON object \(expected one object a line"),
        ('{"customer_id": "A", "Amount": 2, "timestamp": "2024-03-01", "amount": 1}\n',
         r"keys 'Amount' and 'amount' name one column"),
        ("", r"no records \(expected one JSON object a line\)"),
        ('{"customer_id": "A", "timestamp": "2024-03-01", "amount": 1}\n'
         '{"customer_id": "A", "timestamp": "2024-03-01", "amount": 5, "amount": 7}\n',
         r"row 2: key 'amount' twice \(expected each key once\)"),
        ('{"customer_id": "A", "timestamp": "2024-03-01", "amount": 1, "": 2}\n',
         r"key '': an empty name \(expected a column name\)"),
        ('{"customer_id": "A", "timestamp": "2024-03-01", "amount": 1, "_row": "x"}\n',
         r"key '_row': a name clm keeps for row numbers"),
    ):  # fmt: skip
        (lines / "transactions.jsonl").write_text(text)
        with pytest.raises(DataError, match=rf"^transactions.jsonl: {message}"):
            load(lines)


def test_excel_workbooks_read_as_their_csv_twins_with_sheet_rows(tmp_path: Path) -> None:
    from datetime import date

    from clm.settings import ClmSettings
    from features.snapshots import build_snapshot

    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "transactions.csv").write_text(
        "customer_id,timestamp,amount\n1001,2024-03-01 10:30:00,19.99\n"
        "A7,2024-03-02,5\nA7,2024-03-09,-2.5\n"
    )
    (csv / "customers.csv").write_text(
        "customer_id,signup_date,tier,age\n1001,2024-01-01,gold,31\nA7,,silver,\n"
    )
    book = tmp_path / "xlsx"
    book.mkdir()
    workbook(  # cells typed as Excel types them: numbers, dates, text
        book / "transactions.xlsx",
        ("Orders", [
            ["customer_id", "timestamp", "amount"],
            [1001, datetime(2024, 3, 1, 10, 30), 19.99],
            [None, None, None],  # a blank row is no row
            ["A7", date(2024, 3, 2), 5.0],
            ["A7", "2024-03-09", -2.5],
        ]),
        ("Notes", [["exported by the CRM"], ["on 2024-04-01"]]),
    )  # fmt: skip
    workbook(
        book / "customers.xlsx",
        ("Sheet1", [
            ["customer_id", "signup_date", "tier", "age"],
            [1001, date(2024, 1, 1), "gold", 31],
            ["A7", None, "silver", None],
        ]),
    )  # fmt: skip
    as_of, settings = date(2024, 4, 1), ClmSettings()
    expected = build_snapshot(load(csv), as_of=as_of, settings=settings)
    with pytest.warns(UserWarning) as caught:
        data = load(book)
    assert [str(w.message) for w in caught] == [
        f"{book / 'transactions.xlsx'}: read its first sheet 'Orders'; the sheets 'Notes' are "
        "not read (one table a file)"
    ]
    assert data.attributes == {"attr_tier": "category", "attr_age": "numeric"}
    pd.testing.assert_frame_equal(build_snapshot(data, as_of=as_of, settings=settings), expected)
    # Rows are named as Excel numbers them (the header is row 1; blank rows count).
    rows = data.con.execute("SELECT _row, customer_id FROM transactions ORDER BY _row")
    assert rows.fetchall() == [(2, "1001"), (4, "A7"), (5, "A7")]
    bad = book / "bad"
    bad.mkdir()
    for sheet, message in (
        ([["customer_id", "timestamp", "amount"], ["a", "2024-03-01", 1], [], ["b", "soon", 2]],
         r"^transactions.xlsx: column 'timestamp': 1 value\(s\) not an ISO date .* row 4 'soon'$"),
        ([["customer_id", "timestamp", "amount"], ["a", "2024-03-01", 1, "x"]],
         r"^transactions.xlsx: sheet 'Sheet' row 2: a value beyond the 3 named columns"),
        ([["customer_id", "timestamp", "amount", "Amount"]],
         r"^transactions.xlsx: sheet 'Sheet' row 1: columns 'amount' and 'Amount' name one column"),
        ([], r"^transactions.xlsx: sheet 'Sheet' is empty \(expected a header row in row 1\)$"),
        ([["customer_id", "timestamp", "amount"], ["a", "2024-03-01", True]],
         r"column 'amount': 1 value\(s\) not a finite number .*row 2 'true'"),
    ):  # fmt: skip
        workbook(bad / "transactions.xlsx", ("Sheet", sheet))
        with pytest.raises(DataError, match=message):
            load(bad)
    # A cell holding an error, a header clm keeps, values under an empty header: refused.
    import openpyxl

    def one_sheet(rows: list[list[object]], cell: str, **formatting: str) -> None:
        book = openpyxl.Workbook()
        for row in rows:
            book.active.append(row)
        for name, value in formatting.items():
            setattr(book.active[cell], name, value)
        book.save(bad / "transactions.xlsx")

    header = ["customer_id", "timestamp", "amount"]
    one_sheet([header, ["a", "2024-03-01", 1], ["b", "2024-03-02", "#DIV/0!"]], "C3", data_type="e")
    with pytest.raises(
        DataError,
        match=r"^transactions.xlsx: sheet 'Sheet' cell C3: the error #DIV/0! \(expected a value",
    ):
        load(bad)
    for rows, message in (
        ([["customer_id", "timestamp", "amount", "_row"]], r"row 1: column '_row': a name clm keeps"),
        ([["customer_id", "timestamp", "amount", None, "x"], ["a", "2024-03-01", 1, 5, ""]],
         r"column D: values under an empty header \(expected a name in row 1\)"),
    ):  # fmt: skip
        workbook(bad / "transactions.xlsx", ("Sheet", rows))
        with pytest.raises(DataError, match=message):
            load(bad)
    # A code formatted with leading zeros keeps them, as Excel shows it (and the data has it).
    one_sheet([header, [7, "2024-03-01", 1]], "A2", number_format="000000")
    assert load(bad).con.execute("SELECT customer_id FROM transactions").fetchall() == [("000007",)]
    (bad / "transactions.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    with pytest.raises(DataError, match=r"^transactions.xlsx: not a readable Excel workbook \("):
        load(bad)


def test_a_csv_column_named_row_is_refused_as_clm_keeps_the_name(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount,_row\na,2024-01-01,1,x\n"
    )
    with pytest.raises(
        DataError, match=r"^transactions.csv: line 1: column '_row': a name clm keeps"
    ):
        load(tmp_path)
