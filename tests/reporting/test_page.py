"""``clm report`` end to end on the sample data: the page's sections and numbers, its
independence from the network, bad input, and a real headless Chromium rendering it."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.clm.test_cli import clm

AS_OF = "2025-07-01"
CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("funnel", "churn", "value", "satisfaction")


class _Tables(HTMLParser):
    """The cells of every <table id=...> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None


def tables(page: str) -> dict[str, pd.DataFrame]:
    parser = _Tables()
    parser.feed(page)
    return {k: pd.DataFrame(rows[1:], columns=rows[0]) for k, rows in parser.tables.items()}


def data_block(page: str) -> dict:  # type: ignore[type-arg]
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page)
    assert match, "the page has no report-data block"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def built(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Features, a scores file in clm score's layout and the two reports (with and without)."""
    out = tmp_path_factory.mktemp("report")
    result = clm("features", "build", "--data", str(sample_dir), "--as-of", AS_OF,
                 "--out", str(out / "features.parquet"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    snapshot = pd.read_parquet(out / "features.parquet")
    rng = np.random.default_rng(3)
    probability = rng.uniform(0, 1, len(snapshot))
    scores = pd.DataFrame(
        {
            "customer_id": snapshot["customer_id"],
            "known": True,
            "stage": snapshot["stage"],
            "churn_probability": probability,
            "churn_risk": np.select(
                [
                    snapshot["stage"].isin(["awareness", "consideration"]),
                    probability >= 0.6,
                    probability >= 0.3,
                ],
                ["prospect", "high", "medium"],
                "low",
            ),
            "clv": rng.gamma(1.0, 100.0, len(snapshot)),
            "action": rng.choice(["none", "win_back", "vip_outreach"], len(snapshot)),
            "action_value": rng.normal(5, 3, len(snapshot)),
        }
    )
    scores.to_parquet(out / "scores.parquet")
    for name, extra in (
        ("scored.html", ["--scores", str(out / "scores.parquet")]),
        ("plain.html", []),
    ):
        result = clm(
            "report", "--data", str(sample_dir), "--as-of", AS_OF, "--out", str(out / name), *extra
        )
        assert result.returncode == 0, result.stderr
        assert "Lifecycle report as of 2025-07-01" in result.stdout
    return out


def test_sections_captions_and_numbers(built: Path) -> None:
    page = (built / "scored.html").read_text()
    snapshot = pd.read_parquet(built / "features.parquet")
    for section in (*SECTIONS, "scores"):
        assert f'<section id="{section}">' in page
    figures = re.findall(r'<figure class="chart".*?</figure>', page, flags=re.S)
    assert len(figures) == 18
    assert all("<figcaption><b>How to read it:</b>" in f for f in figures)
    # Stage counts are those of clm features build, in the data block and in the table.
    expected = snapshot["stage"].value_counts().to_dict()
    data = data_block(page)
    assert {k: v for k, v in data["stage_counts"].items() if v} == expected
    shown = tables(page)["stage-counts"].set_index("stage")["customers"].str.replace(",", "")
    assert {k: int(v) for k, v in shown.items() if int(v)} == expected
    assert data["kpis"]["customers"] == len(snapshot)
    assert f'data-kpi="customers"><div class="value">{len(snapshot):,}<' in page
    assert data["kpis"]["spend_365d"] == pytest.approx(snapshot["spend_365d"].sum())
    # RFM segments cover every buyer exactly once.
    buyers = int(snapshot["days_since_last_purchase"].notna().sum())
    assert sum(data["rfm_segments"].values()) == buyers


def test_top_at_risk_are_high_risk_and_most_valuable_first(built: Path) -> None:
    page = (built / "scored.html").read_text()
    scores = pd.read_parquet(built / "scores.parquet")
    top = tables(page)["top-at-risk"]
    assert len(top) == 25
    buyers = ~scores["stage"].isin(["awareness", "consideration"])  # prospects are not at risk
    high = scores[buyers & (scores["churn_probability"] >= 0.6)]
    expected = high.nlargest(25, "clv")["customer_id"]
    assert top["customer_id"].tolist() == expected.tolist()
    assert "champion CLV model" in page


def test_a_partial_scores_file_is_warned_about_on_the_command_line(
    built: Path, sample_dir: Path
) -> None:
    scores = pd.read_parquet(built / "scores.parquet").head(4)
    scores.to_csv(built / "few.csv", index=False)
    result = clm(
        "report", "--data", str(sample_dir), "--as-of", AS_OF, "--out", str(built / "few.html"),
        "--scores", str(built / "few.csv"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    known = len(pd.read_parquet(built / "features.parquet"))
    lines = result.stderr.splitlines()
    assert (
        f"warning: {known - 4:,} customer(s) known at {AS_OF} are not in {built / 'few.csv'}; "
        "they are left out of the CLV figures"
    ) in lines
    assert any(
        line.startswith("warning: ") and "does not record the cutoff" in line for line in lines
    )
    assert "are not in" in (built / "few.html").read_text()


def test_without_scores_clv_comes_from_btyd(built: Path) -> None:
    page = (built / "plain.html").read_text()
    assert '<section id="scores">' not in page
    assert "BG/NBD x Gamma-Gamma fitted at the cutoff" in page
    assert data_block(page)["kpis"]["clv_total"] > 0


def test_page_needs_no_network(built: Path) -> None:
    page = (built / "scored.html").read_text()
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=", page)
    assert not re.search(r"<img[^>]+src=[\"']http", page)


def test_bad_input_is_named(built: Path, sample_dir: Path) -> None:
    result = clm(
        "report", "--data", str(sample_dir), "--as-of", AS_OF, "--out", str(built / "r.txt")
    )
    assert result.returncode == 1 and "--out" in result.stderr and ".html" in result.stderr
    missing = built / "nope.parquet"
    result = clm("report", "--data", str(sample_dir), "--as-of", AS_OF,
                 "--out", str(built / "r.html"), "--scores", str(missing))  # fmt: skip
    assert result.returncode == 1 and f"--scores {missing}: file not found" in result.stderr
    result = clm(
        "report", "--data", str(sample_dir), "--as-of", "2025-13-01", "--out", str(built / "r.html")
    )
    assert result.returncode == 1 and "--as-of '2025-13-01' is not a date" in result.stderr
    assert not (built / "r.html").exists()


@pytest.mark.slow
def test_renders_in_headless_chromium_without_script_errors(built: Path) -> None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("chromium is not installed: make test installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on(
            "request",
            lambda r: (
                None if r.url.startswith(("file:", "data:", "blob:")) else problems.append(r.url)
            ),
        )
        page.goto((built / "scored.html").as_uri(), wait_until="load")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        figures = page.evaluate("document.querySelectorAll('figure.chart').length")
        drawn = page.evaluate(
            "document.querySelectorAll('figure.chart .js-plotly-plot svg.main-svg').length"
        )
        first_screen = page.evaluate(
            "[...document.querySelectorAll('.kpi .label')].map(e => e.textContent)"
        )
        page.screenshot(path=str(built / "first-screen.png"))
        assert problems == []
        # The listener does catch a script error (the check above can fail).
        page.evaluate("setTimeout(() => { throw new Error('probe') }, 0)")
        page.wait_for_timeout(200)
        browser.close()
    assert figures == 18 and drawn >= figures
    assert "customers known" in first_screen
    assert any("probe" in p for p in problems)
    assert (built / "first-screen.png").stat().st_size > 20_000
