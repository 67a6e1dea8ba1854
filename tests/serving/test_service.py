"""The scoring service, over HTTP against a real ``clm serve`` on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from clm.settings import ClmSettings
from features.snapshots import build_snapshot
from features.sources import load
from features.stages import STAGES
from serving.client import connection_owners
from serving.contracts import ScoreResponse
from tests.serving.conftest import TOKEN, Deployment

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def score(url: str, customers: list[dict], headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/score", json={"customers": customers}, headers=AUTH if headers is None else headers,
        timeout=30,
    )  # fmt: skip


@pytest.fixture(scope="module")
def snapshot(deployment: Deployment):  # type: ignore[no-untyped-def]
    return build_snapshot(load(deployment.data), as_of=date(2025, 7, 1), settings=ClmSettings())


def test_scores_by_id_equal_the_registered_pyfunc_models(
    server: str, deployment: Deployment, snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = snapshot["customer_id"].iloc[::40].tolist()
    response = score(server, [{"customer_id": i} for i in ids])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["customer_id"] for r in results] == ids  # same order
    assert all(r["known"] for r in results)

    mlflow.set_tracking_uri(deployment.env["CLM_TRAINING__TRACKING_URI"])
    mlflow.set_registry_uri(deployment.env["CLM_TRAINING__TRACKING_URI"])
    rows = snapshot.set_index("customer_id").loc[ids].reset_index()
    features = rows.drop(columns=["customer_id", "as_of"])
    churn = mlflow.pyfunc.load_model("models:/clm-churn@champion").predict(features)
    stage = mlflow.pyfunc.load_model("models:/clm-stage@champion").predict(features)
    clv = mlflow.pyfunc.load_model("models:/clm-clv@champion").predict(features)
    np.testing.assert_allclose(
        [r["churn_probability"] for r in results], churn["churn_probability"], atol=1e-6
    )
    for s in STAGES:
        np.testing.assert_allclose(
            [r["next_stage_probabilities"][s] for r in results], stage[f"probability_{s}"],
            atol=1e-6,
        )  # fmt: skip
    assert [r["next_stage"] for r in results] == stage["next_stage"].tolist()
    for column in ("expected_purchases", "expected_spend", "clv"):
        np.testing.assert_allclose([r[column] for r in results], clv[column], rtol=1e-5)
    assert [r["stage"] for r in results] == rows["stage"].tolist()


def test_result_fields_reasons_risk_bands_and_actions(server: str, snapshot) -> None:
    ids = snapshot["customer_id"].iloc[:200].tolist()
    body = score(server, [{"customer_id": i} for i in ids]).json()
    ScoreResponse.model_validate(body)  # every field present, of its documented type
    results = body["results"]
    settings = ClmSettings()
    for r in results:
        p = r["churn_probability"]
        band = "high" if p >= settings.serving.risk_high else "medium"
        band = band if p >= settings.serving.risk_medium else "low"
        # Someone who has not bought cannot stop buying: a prospect, whatever the probability.
        prospect = r["stage"] in ("awareness", "consideration")
        assert r["churn_risk"] == ("prospect" if prospect else band)
        assert sum(r["next_stage_probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert r["action"] in {*settings.decision.actions, "none"}
        assert (r["action"] == "none") == (r["action_value"] == 0)
        assert len(r["reasons"]) == settings.serving.reasons
        sizes = [abs(reason["contribution"]) for reason in r["reasons"]]
        assert sizes == sorted(sizes, reverse=True)
        for reason in r["reasons"]:
            assert (reason["direction"] == "raises risk") == (reason["contribution"] > 0)
        assert set(r["model_versions"]) == {"clm-churn", "clm-stage", "clm-clv"}
    assert {r["churn_risk"] for r in results} == {"low", "medium", "high", "prospect"}
    assert len({r["action"] for r in results}) >= 2


def test_given_features_override_the_stored_ones(server: str, snapshot) -> None:
    buyer = snapshot[snapshot["stage"] == "retention"].iloc[0]
    stored = score(server, [{"customer_id": buyer.customer_id}]).json()["results"][0]
    lapsed = {"customer_id": buyer.customer_id, "features": {"days_since_last_purchase": 400}}
    changed = score(server, [lapsed]).json()["results"][0]
    assert changed["known"] is True
    assert changed["churn_probability"] > stored["churn_probability"]


def test_ids_with_surrounding_spaces_are_the_customers_of_the_data(server: str, snapshot) -> None:
    buyer = snapshot[snapshot["stage"] == "retention"].iloc[0].customer_id
    plain, spaced = score(server, [{"customer_id": buyer}, {"customer_id": f"  {buyer} "}]).json()[
        "results"
    ]
    assert spaced["known"] is True and spaced["customer_id"] == buyer
    assert spaced["churn_probability"] == plain["churn_probability"]


def test_unknown_customer_is_scored_as_new(server: str) -> None:
    results = score(server, [{"customer_id": "never-seen"}]).json()["results"]
    new = results[0]
    assert new["known"] is False and new["stage"] == "awareness"
    assert new["churn_probability"] > 0.8  # a stranger rarely buys within the horizon
    assert new["expected_purchases"] < 0.5


def test_customer_endpoint_returns_features_and_score(server: str, snapshot) -> None:
    customer = snapshot.iloc[7]
    response = httpx.get(f"{server}/customers/{customer.customer_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["as_of"] == "2025-07-01"
    assert body["features"]["purchase_days"] == customer.purchase_days
    assert body["score"]["customer_id"] == customer.customer_id
    missing = httpx.get(f"{server}/customers/nobody-42", headers=AUTH)
    assert missing.status_code == 404 and "nobody-42" in missing.text
    slashed = httpx.get(f"{server}/customers/shop%2F42", headers=AUTH)  # an id with a '/'
    assert slashed.status_code == 404 and "customer 'shop/42' is not" in slashed.text
    long_id = "x" * 4000  # a long id is quoted by its start and length, not echoed whole
    long = httpx.get(f"{server}/customers/{long_id}", headers=AUTH)
    assert long.status_code == 404 and long.json() == {
        "detail": f"customer {'x' * 64!r}... (4,000 characters) is not in the online store"
    }
    # Surrounding spaces are trimmed, as in POST /score and the data.
    spaced = httpx.get(f"{server}/customers/%20{customer.customer_id}%20", headers=AUTH)
    assert spaced.status_code == 200, spaced.text
    assert spaced.json()["score"]["customer_id"] == customer.customer_id
    blank = httpx.get(f"{server}/customers/%20%20", headers=AUTH)
    assert blank.status_code == 404 and blank.json() == {
        "detail": "customer id '  ' is empty once trimmed"
    }


def test_metrics_name_routes_never_customers_and_stay_bounded(server: str, snapshot) -> None:
    def metrics() -> str:
        return httpx.get(f"{server}/metrics", timeout=30).text

    known = str(snapshot["customer_id"].iloc[3])
    assert httpx.get(f"{server}/customers/{known}", headers=AUTH).status_code == 200
    assert httpx.get(f"{server}/customers/jane.doe@example.com", headers=AUTH).status_code == 404
    assert httpx.get(f"{server}/customers/unauthorised-id-1").status_code == 401
    assert httpx.get(f"{server}/made/up/{known}").status_code == 404
    before = metrics()
    assert 'endpoint="/customers/{customer_id}"' in before and 'endpoint="(other)"' in before
    for secret in (known, "jane.doe", "unauthorised-id-1", "made/up"):
        assert secret not in before
    for i in range(40):  # new ids make no new series
        httpx.get(f"{server}/customers/probe-{i}", headers=AUTH if i % 2 else {})
    after = metrics()
    assert "probe-" not in after
    added = _series_of(after) - _series_of(before)
    assert not added, sorted(added)[:5]


def _series_of(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"customers": []}, "customers"),
        ({"customers": [{"customer_id": ""}]}, "customer_id"),
        ({"customers": [{"customer_id": " \t "}]}, "customer_id"),
        ({"customers": [{"customer_id": "a", "features": {"nope": 1}}]}, "nope"),
        ({"customers": [{"customer_id": "a", "features": {"purchase_days": -2}}]}, "purchase_days"),
        (
            {"customers": [{"customer_id": "a", "features": {"purchase_days": "many"}}]},
            "purchase_days",
        ),
        ({"customers": [{"customer_id": "a", "features": {"stage": "loyal"}}]}, "stage"),
        ({"customers": [{"customer_id": "a", "features": {"stage": 3}}]}, "stage"),
        ({"customers": [{"customer_id": "a", "features": {"stage": None}}]}, "stage"),
        ({"customers": [{"customer_id": 5}]}, "customer_id"),
        ({"customers": [{"customer_id": "a", "extra": 1}]}, "extra"),
        ({"people": []}, "customers"),
        ({"customers": [{"customer_id": str(i)} for i in range(1001)]}, "customers"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(server: str, body: dict, named: str) -> None:
    response = httpx.post(f"{server}/score", json=body, headers=AUTH, timeout=30)
    assert 400 <= response.status_code < 500, response.text
    assert named in response.text


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({"days_since_last_purchase": 10**20}, "expected a number under 10^15 in size"),
        ({"total_spend": -1e300}, "expected a number under 10^15 in size"),
        ({"last_nps": 11}, "expected a number from 0 to 10, got 11"),
        ({"email_open_rate_365d": 1.5}, "expected a number from 0 to 1, got 1.5"),
        ({"events_trend_30d_vs_prior_60d": -2}, "expected a number from -1 to 1, got -2"),
        # Counts are whole numbers and never missing; only a flag is true or false.
        ({"visit_events_7d": 2.5}, "expected a whole number, got 2.5"),
        ({"visit_events_7d": True}, "expected a number, got true"),
        ({"purchase_days": None}, "expected a number (never missing: 0 for none), got null"),
        ({"total_spend": None}, "expected a number (never missing: 0 for none), got null"),
        ({"days_since_last_purchase": False}, "expected a number, got false"),
    ],
)
def test_overrides_out_of_range_get_400_naming_the_field(
    server: str, features: dict, expected: str
) -> None:
    response = score(server, [{"customer_id": "a"}, {"customer_id": "b", "features": features}])
    assert response.status_code == 400, response.text
    name = next(iter(features))
    assert f"customers[1].features.{name}: {expected}" in response.text


def test_overrides_at_the_edges_of_their_range_are_scored(server: str) -> None:
    # A recency may be missing (no purchase yet); a whole number may be written 3.0.
    edges = {"last_nps": 10, "email_open_rate_365d": 0.0, "days_since_last_purchase": 10**14,
             "nps_responses": 40, "nps_events_30d": 25, "purchase_days": 3.0,
             "days_since_first_purchase": None, "mean_purchase_spend": 12.5}  # fmt: skip
    response = score(server, [{"customer_id": "a", "features": edges}])
    assert response.status_code == 200, response.text


def test_requests_served_from_the_middleware_are_answered_as_the_fastapi_route_answers(
    server: str, snapshot
) -> None:  # type: ignore[no-untyped-def]
    """A JSON body is answered by serving.service.score_json; the same body as another JSON
    media type (FastAPI reads ``+json`` as JSON, the fast route leaves it alone) goes through
    FastAPI's validation and route. Valid and bad requests get the same answers both ways."""
    ids = snapshot["customer_id"].iloc[::300].tolist()
    bodies = [
        json.dumps({"customers": [{"customer_id": i} for i in ids]}),
        json.dumps(
            {
                "customers": [
                    {
                        "customer_id": ids[0],
                        "features": {
                            "days_since_last_purchase": 12,
                            "purchase_days": 3,
                            "stage": "retention",
                        },
                    },
                    {
                        "customer_id": "nobody-7",
                        "features": {"total_spend": 10**14, "attr_region": None},
                    },
                    {"customer_id": ids[1], "features": None},
                ]
            }
        ),
        # Escapes, a repeated key (the last one counts), spacing.
        '{ "customers" : [ {"customer_id": "x", "customer_id": "\\u0043' + ids[2][1:] + '"} ] }',
        # Bad: unknown feature (400 from the scorer), NaN (422), too many, wrong type.
        '{"customers": [{"customer_id": "a", "features": {"nope": 1}}]}',
        '{"customers": [{"customer_id": "a", "features": {"purchase_days": NaN}}]}',
        json.dumps({"customers": [{"customer_id": str(i)} for i in range(1001)]}),
        '{"customers": [{"customer_id": 5}]}',
        "{not json",
    ]
    for body in bodies:
        answers = [
            httpx.post(
                f"{server}/score", content=body, headers={**AUTH, "content-type": kind}, timeout=30
            )
            for kind in ("application/json", "application/vnd.clm+json")
        ]
        fast, routed = answers
        assert fast.status_code == routed.status_code, (
            body[:80],
            fast.text[:300],
            routed.text[:300],
        )
        assert fast.json() == routed.json(), body[:80]
    statuses = [httpx.post(f"{server}/score", content=b, headers={**AUTH, "content-type": "application/json"}).status_code for b in bodies]  # fmt: skip
    assert statuses == [200, 200, 200, 400, 422, 422, 422, 422]


def test_non_finite_numbers_and_broken_json_get_422_naming_the_problem(server: str) -> None:
    raw = '{"customers": [{"customer_id": "a", "features": {"purchase_days": NaN}}]}'
    headers = {**AUTH, "content-type": "application/json"}
    for body, named in (
        (raw, "purchase_days"),
        (raw.replace("NaN", "Infinity"), "purchase_days"),
        ("{not json", "json_invalid"),
    ):
        response = httpx.post(f"{server}/score", content=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert named in response.text
    # One error for the field, not one per type a feature value may have.
    response = httpx.post(f"{server}/score", content=raw, headers=headers)
    assert response.json()["detail"] == [
        {
            "loc": ["body", "customers", "0", "features", "purchase_days"],
            "msg": "Input should be a finite number (not NaN or an infinity)",
            "type": "finite_number",
        }
    ]
    listed = raw.replace("NaN", "[1, 2]")
    (error,) = httpx.post(f"{server}/score", content=listed, headers=headers).json()["detail"]
    assert error["loc"][-1] == "purchase_days" and error["msg"].startswith(
        "Input should be a finite number, a whole number, true or false, text"
    )


def test_a_body_not_in_utf8_gets_400_naming_the_byte(server: str) -> None:
    body = '{"customers": [{"customer_id": "café"}]}'.encode("latin-1")  # é is 0xe9
    headers = {**AUTH, "content-type": "application/json"}
    response = httpx.post(f"{server}/score", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(
        "body: not UTF-8 text at byte 35 (0xe9: invalid continuation byte)"
    )
    # UTF-16 with its BOM is JSON that json.loads reads: it is scored.
    utf16 = '{"customers": [{"customer_id": "café"}]}'.encode("utf-16")
    scored = httpx.post(f"{server}/score", content=utf16, headers=headers)
    assert scored.status_code == 200, scored.text
    assert scored.json()["results"][0]["customer_id"] == "café"


def test_pages_of_the_allowed_origin_may_call_it_with_the_token(server: str) -> None:
    from tests.serving.conftest import CORS_ORIGIN

    preflight = {
        "origin": CORS_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    # A browser's preflight carries no token: it is answered before the token check.
    answer = httpx.options(f"{server}/score", headers=preflight)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    body = {"customers": [{"customer_id": "a"}]}
    scored = httpx.post(f"{server}/score", json=body, headers={**AUTH, "origin": CORS_ORIGIN})
    assert scored.status_code == 200
    assert scored.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert scored.headers["access-control-expose-headers"].lower() == "x-request-id"
    # The origin does not stand in for the token.
    bare = httpx.post(f"{server}/score", json=body, headers={"origin": CORS_ORIGIN})
    assert bare.status_code == 401
    # Another origin gets no CORS headers, so its page cannot read the answer.
    other = httpx.options(f"{server}/score", headers={**preflight, "origin": "https://x.test"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    elsewhere = httpx.post(
        f"{server}/score", json=body, headers={**AUTH, "origin": "https://x.test"}
    )
    assert elsewhere.status_code == 200 and "access-control-allow-origin" not in elsewhere.headers


def test_compressed_bodies_are_read_and_a_zip_bomb_gets_413(server: str) -> None:
    import gzip
    import zlib

    body = json.dumps({"customers": [{"customer_id": f"c{i}"} for i in range(50)]}).encode()
    plain = httpx.post(
        f"{server}/score", content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert plain.status_code == 200
    for encoding, packed in (
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),  # zlib data, as RFC 9110 says
        ("deflate", zlib.compress(body, wbits=-15)),  # raw, as some clients send it
    ):
        headers = {**AUTH, "content-type": "application/json", "content-encoding": encoding}
        answer = httpx.post(f"{server}/score", content=packed, headers=headers)
        assert answer.status_code == 200, (encoding, answer.text)
        assert answer.json() == plain.json()
    headers = {**AUTH, "content-type": "application/json", "content-encoding": "gzip"}
    broken = httpx.post(f"{server}/score", content=body, headers=headers)  # not gzipped
    assert broken.status_code == 400
    assert broken.json()["detail"].startswith("body: not compressed data as its Content-Encoding")
    cut = httpx.post(f"{server}/score", content=gzip.compress(body)[:-12], headers=headers)
    assert cut.status_code == 400 and "cut short" in cut.text
    # gzip members one after another are one body; zlib data of a small window is deflate.
    half = len(body) // 2
    members = gzip.compress(body[:half]) + gzip.compress(body[half:])
    assert httpx.post(f"{server}/score", content=members, headers=headers).json() == plain.json()
    packer = zlib.compressobj(wbits=11)
    small_window = packer.compress(body) + packer.flush()
    headers["content-encoding"] = "deflate"
    answer = httpx.post(f"{server}/score", content=small_window, headers=headers)
    assert answer.status_code == 200 and answer.json() == plain.json()
    headers["content-encoding"] = "gzip"
    bomb = gzip.compress(b" " * 20_000_000)  # 20 MB of spaces in about 20 kB
    assert len(bomb) < 100_000
    answer = httpx.post(f"{server}/score", content=bomb, headers=headers)
    assert answer.status_code == 413
    assert answer.json() == {"detail": "request body over 1048576 bytes once decompressed"}
    headers["content-encoding"] = "br"
    other = httpx.post(f"{server}/score", content=body, headers=headers)
    assert other.status_code == 415 and "Content-Encoding br: expected gzip" in other.text


def test_bodies_over_one_mib_get_413(server: str) -> None:
    big = json.dumps({"customers": [{"customer_id": "x" * 150}] * 8000})
    assert len(big) > 1_048_576
    response = httpx.post(
        f"{server}/score", content=big, headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 413
    # Streamed (no length given) and of another JSON type: still 413, not the app's 400.
    chunks = (big[i : i + 65536].encode() for i in range(0, len(big), 65536))
    headers = {**AUTH, "content-type": "application/vnd.clm+json"}
    streamed = httpx.post(f"{server}/score", content=chunks, headers=headers)
    assert streamed.status_code == 413, streamed.text
    assert "over 1048576 bytes" in streamed.text


def test_a_body_not_declared_json_gets_415_naming_its_type(server: str) -> None:
    body = json.dumps({"customers": [{"customer_id": "a"}]})
    # curl -d without -H sends the form type.
    for kind in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {**AUTH, **({"content-type": kind} if kind else {})}
        refused = httpx.post(f"{server}/score", content=body, headers=headers)
        assert refused.status_code == 415, refused.text
        assert refused.json() == {
            "detail": f"Content-Type {kind or 'missing'}: expected application/json (a JSON body)"
        }
    typed = {**AUTH, "content-type": "application/json"}
    answered = httpx.post(f"{server}/score", content=body, headers=typed)
    assert answered.status_code == 200 and answered.json()["results"][0]["customer_id"] == "a"


def test_token_is_required_on_scoring_endpoints_only(server: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = score(server, [{"customer_id": "a"}], headers=headers)
        assert refused.status_code == 401
        assert refused.json() == {"detail": "missing or wrong Authorization: Bearer token"}
        assert httpx.get(f"{server}/customers/a", headers=headers).status_code == 401
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert score(server, [{"customer_id": "a"}], headers=lower).status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    assert httpx.get(f"{server}/metrics").status_code == 200
    assert score(server, [{"customer_id": "a"}]).status_code == 200


def test_openapi_documents_every_result_field(server: str) -> None:
    schema = httpx.get(f"{server}/docs.json").json()
    text = json.dumps(schema)
    for field in ("churn_probability", "churn_risk", "next_stage_probabilities", "clv",
                  "action_value", "reasons", "model_versions", "/customers/{customer_id}"):  # fmt: skip
        assert field in text, field


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clm", "serve", *args], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_serve_refuses_a_public_address_without_a_token(deployment: Deployment) -> None:
    env = {k: v for k, v in deployment.env.items() if k != "CLM_API_TOKEN"}
    result = _serve(env, "--host", "0.0.0.0")
    assert result.returncode == 1
    assert "refusing to serve on 0.0.0.0 without an API token" in result.stderr


def test_train_prints_each_gate_metric_beside_its_baselines_and_no_mlflow_chatter(
    deployment: Deployment,
) -> None:
    out, err = deployment.trained.stdout, deployment.trained.stderr
    # stderr: the progress of each step, and nothing of MLflow's (INFO lines, "Successfully
    # registered model"); with this sample, no warning either.
    assert err.strip() and all(line.startswith("done ") for line in err.splitlines()), err
    flat = " ".join(out.split())
    for name in ("auc_buyers", "recency", "bgnbd", "log_loss", "markov", "relative_mae"):
        assert name in flat, name
    for model in ("clm-churn", "clm-stage", "clm-clv"):
        assert f"{model} │ 1 │ yes" in flat, model


def test_serve_refuses_a_port_in_use_in_one_line(deployment: Deployment) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _serve(deployment.env, "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr == (
        f"error: cannot serve on 127.0.0.1:{port}: Address already in use (another server may "
        "be on it: stop it, or choose another port with --port)\n"
    )


def test_serve_refuses_to_start_without_champions_or_store(
    deployment: Deployment, tmp_path: Path
) -> None:
    no_models = {**deployment.env, "CLM_TRAINING__TRACKING_URI": f"sqlite:///{tmp_path}/x.db"}
    result = _serve(no_models)
    assert result.returncode == 1 and "no MLflow store" in result.stderr
    no_store = {**deployment.env, "CLM_SERVING__ONLINE_STORE": f"sqlite:///{tmp_path}/none.db"}
    result = _serve(no_store)
    assert result.returncode == 1 and "run clm features materialize" in result.stderr
    # A store materialized under other stage rules than the champions were trained with (they
    # were retrained and promoted since): its features mean something else to them.
    other = _store_of_other_stage_rules(deployment, tmp_path / "other.db")
    result = _serve({**deployment.env, "CLM_SERVING__ONLINE_STORE": f"sqlite:///{other}"})
    assert result.returncode == 1
    assert re.fullmatch(
        r"error: the champions were trained with stages.churn_inactivity_days = 180 \(the "
        r"store: 90\) \[clm-churn v\d+, clm-stage v\d+, clm-clv v\d+\]: the online store's "
        r"features were materialized with other settings; run clm features materialize with "
        r"the champions' settings\n",
        result.stderr,
    ), result.stderr


def _store_of_other_stage_rules(deployment: Deployment, path: Path) -> Path:
    """A copy of the deployment's store, as if materialized with 90 days of inactivity for
    churned (the champions were trained with 180)."""
    import sqlite3

    online = Path(deployment.env["CLM_SERVING__ONLINE_STORE"].removeprefix("sqlite:///"))
    path.write_bytes(online.read_bytes())
    with sqlite3.connect(path) as con:
        (text,) = con.execute("SELECT value FROM meta WHERE key = 'feature_settings'").fetchone()
        built = json.loads(text)
        assert built["stages.churn_inactivity_days"] == 180
        built["stages.churn_inactivity_days"] = 90
        con.execute(
            "UPDATE meta SET value = ? WHERE key = 'feature_settings'", (json.dumps(built),)
        )
    return path


def test_a_store_materialized_anew_under_other_settings_gets_503_until_a_restart(
    deployment: Deployment, tmp_path: Path
) -> None:
    import os
    import sqlite3

    from serving.client import local_service

    online = Path(deployment.env["CLM_SERVING__ONLINE_STORE"].removeprefix("sqlite:///"))
    store = tmp_path / "online.db"
    store.write_bytes(online.read_bytes())
    env = {**deployment.env, "CLM_SERVING__ONLINE_STORE": f"sqlite:///{store}"}
    log = tmp_path / "serve.log"
    with local_service(token=TOKEN, env=env, log=log) as client:
        known = sqlite3.connect(store).execute("SELECT customer_id FROM features").fetchone()[0]
        assert score(client.url, [{"customer_id": known}]).status_code == 200
        # Materialized anew (a new file renamed over it) under other stage rules.
        os.replace(_store_of_other_stage_rules(deployment, tmp_path / "other.db"), store)
        for _ in range(2):
            refused = score(client.url, [{"customer_id": known}])
            assert refused.status_code == 503
            assert "materialized under other feature settings" in refused.json()["detail"]
    assert "stages.churn_inactivity_days = 180 (the store: 90)" in log.read_text()


def test_python_client_scores_and_reports_errors(server: str, snapshot) -> None:  # type: ignore[no-untyped-def]
    from serving.client import ScoringClient, ServiceError

    known = snapshot["customer_id"].iloc[5]
    with ScoringClient(server, token=TOKEN) as client:
        assert client.ready()
        results = client.score(
            [known, {"customer_id": "new-9", "features": {"visit_events_7d": 2}}]
        )
        raw = score(server, [{"customer_id": known}]).json()["results"][0]
        assert results[0] == raw
        assert [r["known"] for r in results] == [True, False]
        assert client.customer(known)["customer_id"] == known
        with pytest.raises(ServiceError) as bad:
            client.score([{"customer_id": "x", "features": {"no_such_feature": 1}}])
        assert bad.value.status == 400 and "no_such_feature" in str(bad.value.detail)
    with ScoringClient(server) as anonymous, pytest.raises(ServiceError) as refused:
        anonymous.score([known])
    assert refused.value.status == 401


def test_service_on_a_redis_store_gives_the_same_scores(
    server: str, deployment: Deployment, redis_url: str, snapshot
) -> None:  # type: ignore[no-untyped-def]
    from serving.client import ScoringClient, local_service

    store = f"{redis_url}?prefix=service"
    env = {**deployment.env, "CLM_SERVING__ONLINE_STORE": store}
    subprocess.run(
        [sys.executable, "-m", "clm", "features", "materialize", "--data", str(deployment.data),
         "--as-of", "2025-07-01"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    ids = snapshot["customer_id"].iloc[::300].tolist()
    with ScoringClient(server, token=TOKEN) as on_sqlite:
        expected = on_sqlite.score(ids)
        for one in ids[:3]:  # passes of the first service the second's cannot mimic
            on_sqlite.score([one])
        passes, _ = _pass_histogram(server)
        assert passes >= 4
        with local_service(token=TOKEN, env={"CLM_SERVING__ONLINE_STORE": store, **{
            k: v for k, v in deployment.env.items() if k.startswith("CLM_TRAINING")
        }}) as on_redis:  # fmt: skip
            assert on_redis.score(ids) == expected
            assert on_redis.customer(ids[0])["customer_id"] == ids[0]
            assert _pass_histogram(on_redis.url)[0] == 2  # its own passes only
            # BentoML empties one shared metrics folder at every start: the first
            # service's figures must survive the second one starting (serving.launch).
            on_sqlite.score(ids[:1])
            assert _pass_histogram(server)[0] == passes + 1


def test_each_request_is_logged_with_its_id_route_status_and_time_and_nothing_personal(
    server: str, deployment: Deployment, snapshot
) -> None:

    known = str(snapshot["customer_id"].iloc[7])
    traced = score(server, [{"customer_id": known, "features": {"purchase_days": 987654}}],
                   headers={**AUTH, "X-Request-ID": "trace-abc-123"})  # fmt: skip
    assert traced.status_code == 200
    assert traced.headers["x-request-id"] == "trace-abc-123"
    looked_up = httpx.get(f"{server}/customers/{known}", headers=AUTH, timeout=30)
    assert looked_up.status_code == 200
    generated = looked_up.headers["x-request-id"]
    assert len(generated) == 16 and generated != "trace-abc-123"
    # A caller's id that is not a plain token is replaced, never logged as given.
    odd = score(server, [{"customer_id": known}], headers={**AUTH, "X-Request-ID": "a b\\c"})
    assert odd.headers["x-request-id"] != "a b\\c"
    refused = httpx.post(f"{server}/score", json={"customers": []}, timeout=30,
                         headers={"Authorization": "Bearer wrong-token-xyz"})  # fmt: skip
    assert refused.status_code == 401
    made_up = httpx.get(f"{server}/customer/{known}", headers=AUTH, timeout=30)
    assert made_up.status_code == 404
    assert httpx.get(f"{server}/healthz", timeout=30).status_code == 200

    log = deployment.data.parent / "serve.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and refused.headers["x-request-id"] not in log.read_text():
        time.sleep(0.2)
    text = log.read_text()
    assert "request trace-abc-123 POST /score 200 in " in text
    assert f"request {generated} GET /customers/{{customer_id}} 200 in " in text
    assert f"request {refused.headers['x-request-id']} POST /score 401 in " in text
    assert f"request {made_up.headers['x-request-id']} GET (other) 404 in " in text
    assert "/healthz" not in text  # probes are not logged
    for secret in (known, "987654", TOKEN, "wrong-token-xyz", "a b\\c"):
        assert secret not in text


def _pass_histogram(url: str) -> tuple[float, float]:
    """(passes, requests) of clm_scoring_pass_requests on /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    figures = dict(
        line.split(" ", 1) for line in text.splitlines() if line.startswith("clm_scoring_pass")
    )
    return (
        float(figures.get("clm_scoring_pass_requests_count", 0)),
        float(figures.get("clm_scoring_pass_requests_sum", 0)),
    )


def _flat(value: object, path: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _flat(item, f"{path}.{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in _flat(item, f"{path}[{i}]").items()
        }
    return {path: value}


def test_concurrent_requests_are_scored_together_with_the_results_of_requests_alone(
    server: str, snapshot
) -> None:
    import asyncio

    ids = snapshot["customer_id"].iloc[1::50].tolist()[:40]
    bodies = [[{"customer_id": i}] for i in ids]
    bodies[5] = [
        {"customer_id": ids[5], "features": {"purchase_days": 3}},
        {"customer_id": "nobody"},
    ]
    bodies[9] = [{"customer_id": ids[9], "features": {"purchase_days": -1}}]  # a 400, alone
    alone = [score(server, body) for body in bodies]
    passes, requests = _pass_histogram(server)

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
            return await asyncio.gather(
                *(client.post(f"{server}/score", json={"customers": b}) for b in bodies)
            )

    merged = asyncio.run(together())
    assert [r.status_code for r in merged] == [r.status_code for r in alone]
    assert merged[9].status_code == 400 and "purchase_days" in merged[9].text
    for one, other in zip(alone, merged, strict=True):
        if one.status_code == 200:
            expected, got = _flat(one.json()), _flat(other.json())
            assert got.keys() == expected.keys()
            for key, value in expected.items():
                assert got[key] == (pytest.approx(value, rel=1e-12)
                                    if isinstance(value, float) else value), key  # fmt: skip
    more_passes, more_requests = _pass_histogram(server)
    assert more_requests - requests == len(bodies) - 1  # every valid request scored once
    assert more_passes - passes < len(bodies) - 1  # and some of them together


def test_scoring_routes_skip_tracing_unless_it_is_turned_on(deployment: Deployment) -> None:
    urls = ["http://h/score", "http://h/customers/C1", "http://h/healthz", "http://h/metrics"]
    code = (
        "import json, sys\n"
        "from opentelemetry.util.http import ExcludeList\n"
        "from serving import service\n"
        "urls = ExcludeList(service.Scoring.config.get('tracing', {}).get('excluded_urls', []))\n"
        f"print(json.dumps([urls.url_disabled(u) for u in {urls!r}]))\n"
    )

    def skipped(**env: str) -> list[bool]:
        done = subprocess.run([sys.executable, "-c", code], env={**deployment.env, **env},
                              capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    assert skipped() == [True, True, False, False]  # probes and metrics stay traced
    assert skipped(CLM_SERVING__TRACING="true") == [False, False, False, False]


def _burst(port: int, size: int) -> set[int]:
    """Open ``size`` connections without waiting for any to be accepted, get an answer on
    each, and return the server processes that hold them (the connections are then closed)."""
    clients = []
    for _ in range(size):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        clients.append(c)
    time.sleep(0.1)
    try:
        for c in clients:  # an answer on every connection: every one was accepted
            c.setblocking(True)
            c.settimeout(30)
            c.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
        assert all(c.recv(4096).startswith(b"HTTP/1.1 200") for c in clients)
        owners = connection_owners(port, clients)
        assert sum(owners.values()) == size
        return set(owners)
    finally:
        for c in clients:
            c.close()


def test_two_workers_share_a_burst_of_connections(
    server: str, deployment: Deployment, snapshot
) -> None:  # type: ignore[no-untyped-def]
    """A client that opens its connections at once (a pool, wrk) gets both workers
    (serving.service._share_connections); asyncio alone put them all on one nearly always."""
    from serving.client import ScoringClient, local_service, wait_for_workers

    ids = snapshot["customer_id"].iloc[::500].tolist()
    with ScoringClient(server, token=TOKEN) as one_worker:
        expected = one_worker.score(ids)
    with local_service(token=TOKEN, env={**deployment.env, "CLM_SERVING__WORKERS": "2"}) as two:
        port = int(two.url.rsplit(":", 1)[1])
        wait_for_workers(two.url, 2)  # ready once one worker is: the other may be loading
        # Both workers take part of the bursts. How many bursts are shared depends on the
        # scheduler: 5 of 5 on an idle machine, 2 of 5 with the rest of the suite running on
        # both cores (the accept itself is pinned by the next test).
        shared = sum(len(_burst(port, 8)) == 2 for _ in range(10))
        assert shared >= 1, "every burst of connections landed on one worker"
        # A connection each (whichever worker takes it): the same scores as one worker's.
        answers = [score(two.url, [{"customer_id": i}]) for i in ids]
        assert [a.json()["results"][0] for a in answers] == expected


def test_a_shared_accept_takes_one_pending_connection_per_turn_of_the_loop() -> None:
    """What serving.service._share_connections changes, on asyncio's own selector loop: one
    readiness event of the listening socket accepts one pending connection, not all."""
    import asyncio

    from serving.service import _share_connections

    async def accepted_per_turn() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        original = loop._accept_connection  # type: ignore[attr-defined]
        _share_connections()
        shared = loop._accept_connection  # type: ignore[attr-defined]
        _share_connections()  # a second call keeps the one wrap
        assert shared is not original and loop._accept_connection is shared  # type: ignore[attr-defined]
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(32)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        clients: list[socket.socket] = []

        def turn(accept) -> int:  # type: ignore[no-untyped-def]
            """8 pending connections, one call as the selector makes it: how many taken."""
            clients.extend(socket.create_connection(("127.0.0.1", port)) for _ in range(8))
            time.sleep(0.05)
            accept(asyncio.Protocol, listener, None, None, 100)
            left = 0
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    return 8 - left
                conn.close()
                left += 1

        try:
            counts = turn(shared), turn(original)
            await asyncio.sleep(0.05)  # the accepted connections' transports start
            return counts
        finally:
            for c in clients:
                c.close()
            listener.close()

    assert asyncio.run(accepted_per_turn()) == (1, 8)


def test_customer_view_follows_a_new_materialize_and_shows_long_attributes(
    deployment: Deployment, tmp_path: Path
) -> None:
    import pandas as pd

    from serving.client import ScoringClient, local_service

    data = tmp_path / "data"
    data.mkdir()
    for name in ("transactions", "events"):
        (data / f"{name}.parquet").symlink_to(deployment.data / f"{name}.parquet")
    customers = pd.read_parquet(deployment.data / "customers.parquet")
    customers["notes"] = "long note " * 40  # 400 characters: text of any length is stored
    customers.to_parquet(data / "customers.parquet")
    store = f"sqlite:///{tmp_path}/online.db"
    env = {**deployment.env, "CLM_SERVING__ONLINE_STORE": store}

    def materialize(as_of: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "clm", "features", "materialize", "--data", str(data),
             "--as-of", as_of], check=True, env=env, capture_output=True,
        )  # fmt: skip

    materialize("2025-07-01")
    known = str(customers["customer_id"].iloc[0])
    with local_service(token=TOKEN, env={"CLM_SERVING__ONLINE_STORE": store, **{
        k: v for k, v in deployment.env.items() if k.startswith("CLM_TRAINING")
    }}) as service, ScoringClient(service.url, token=TOKEN) as client:  # fmt: skip
        first = client.customer(known)
        assert first["as_of"] == "2025-07-01"
        assert first["features"]["attr_notes"] == ("long note " * 40).strip()
        materialize("2025-10-01")  # while serving
        later = client.customer(known)
        assert later["as_of"] == "2025-10-01"
        assert later["features"]["days_in_stage"] != first["features"]["days_in_stage"]


def test_bentoml_serve_on_a_public_address_without_a_token_never_answers(
    deployment: Deployment, tmp_path: Path
) -> None:
    from serving.client import free_port

    port = free_port()
    env = {k: v for k, v in deployment.env.items() if k != "CLM_API_TOKEN"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:Scoring",
             "--host", "0.0.0.0", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "refusing to serve" not in log.read_text():
            time.sleep(0.5)
        assert "refusing to serve on 0.0.0.0 without an API token" in log.read_text()
        with pytest.raises(httpx.HTTPError):
            httpx.post(
                f"http://127.0.0.1:{port}/score",
                json={"customers": [{"customer_id": "a"}]},
                timeout=5,
            ).raise_for_status()
    finally:
        import os
        import signal

        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
