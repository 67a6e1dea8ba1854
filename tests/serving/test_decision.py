"""The retention decision on hand-made customers: value = P x uplift x CLV - cost."""

from __future__ import annotations

import numpy as np
import pytest

from clm.errors import ConfigError
from clm.settings import Action, DecisionSettings
from features.stages import STAGES
from serving.decision import NO_ACTION, Policy, apply_budget

PLAYBOOK = {
    "vip_outreach": Action(
        kind="retention", cost=25, uplift=0.3, stages=["retention"], min_clv=200
    ),
    "retention_offer": Action(
        kind="retention", cost=5, uplift=0.15, stages=["purchase", "retention"]
    ),
    "win_back": Action(kind="retention", cost=3, uplift=0.05, stages=["churned"]),
    "referral_ask": Action(kind="growth", cost=0.5, uplift=0.05, stages=["advocacy"]),
}


def decide(stage: str, churn: float, clv: float) -> tuple[str, float]:
    policy = Policy(DecisionSettings(actions=PLAYBOOK), STAGES)
    decided = policy.decide(np.array([stage]), np.array([churn]), np.array([clv]))
    return str(decided.action[0]), float(decided.value[0])


def test_valuable_customer_at_risk_gets_the_personal_call() -> None:
    # vip: 0.8 x 0.3 x 1000 - 25 = 215; offer: 0.8 x 0.15 x 1000 - 5 = 115
    assert decide("retention", 0.8, 1000) == ("vip_outreach", pytest.approx(215))


def test_below_the_vip_clv_floor_the_offer_wins() -> None:
    # vip is not eligible (clv 150 < 200); offer: 0.8 x 0.15 x 150 - 5 = 13
    assert decide("retention", 0.8, 150) == ("retention_offer", pytest.approx(13))


def test_nothing_positive_means_no_action() -> None:
    # offer: 0.1 x 0.15 x 100 - 5 = -3.5 < 0
    assert decide("retention", 0.1, 100) == (NO_ACTION, 0.0)


def test_actions_only_apply_to_their_stages() -> None:
    assert decide("awareness", 0.9, 10_000)[0] == NO_ACTION
    # win back a churned customer: 0.9 x 0.05 x 400 - 3 = 15
    assert decide("churned", 0.9, 400) == ("win_back", pytest.approx(15))


def test_growth_value_uses_the_chance_to_stay() -> None:
    # (1 - 0.2) x 0.05 x 100 - 0.5 = 3.5
    assert decide("advocacy", 0.2, 100) == ("referral_ask", pytest.approx(3.5))


def test_budget_keeps_the_most_valuable_costly_actions() -> None:
    policy = Policy(DecisionSettings(actions=PLAYBOOK), STAGES)
    decided = policy.decide(
        np.array(["retention", "retention", "retention", "awareness"]),
        np.array([0.8, 0.5, 0.9, 0.9]),
        np.array([150.0, 150.0, 150.0, 150.0]),
    )
    assert list(decided.action) == ["retention_offer"] * 3 + [NO_ACTION]
    assert apply_budget(decided, policy, 2, np.array(["a", "b", "c", "d"])) == 1
    assert list(decided.action) == ["retention_offer", NO_ACTION, "retention_offer", NO_ACTION]
    assert decided.value[1] == 0.0


def test_budget_breaks_ties_by_customer_id_whatever_the_row_order() -> None:
    policy = Policy(DecisionSettings(actions=PLAYBOOK), STAGES)
    ids = np.array(["c7", "c2", "c9", "c1", "c5"])
    kept = []
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        decided = policy.decide(
            np.array(["retention"] * 5), np.full(5, 0.8), np.full(5, 150.0)
        )  # five equal values
        assert apply_budget(decided, policy, 2, ids[order]) == 3
        kept.append(sorted(ids[order][decided.action != NO_ACTION]))
    assert kept == [["c1", "c2"]] * 3


def test_playbook_naming_an_unknown_stage_is_refused() -> None:
    bad = {"x": Action(kind="growth", cost=1, uplift=0.1, stages=["loyal"])}
    with pytest.raises(ConfigError, match=r"decision.actions.x.stages: \['loyal'\]"):
        Policy(DecisionSettings(actions=bad), STAGES)


def test_client_refuses_a_bare_id_and_quotes_ids() -> None:
    import httpx

    from serving.client import ScoringClient

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"detail": "customer 'a b/c' is not in the store"})

    client = ScoringClient("http://127.0.0.1:1")
    client._http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(handler))
    with pytest.raises(TypeError, match="list of ids"):
        client.score("C000007")
    from serving.client import ServiceError

    with pytest.raises(ServiceError, match="HTTP 404: customer 'a b/c'"):
        client.customer("a b/c")
    assert seen == ["/customers/a%20b%2Fc"]


def _one_by_one(stage: str, churn: float, clv: float) -> tuple[str, float]:
    """The rule as the module doc states it, one customer and one action at a time."""
    best, best_value = NO_ACTION, 0.0
    for name, action in PLAYBOOK.items():
        if stage not in action.stages or not clv >= action.min_clv:
            continue
        at_stake = churn if action.kind == "retention" else 1.0 - churn
        value = at_stake * action.uplift * clv - action.cost
        if value > best_value:  # the first of equal values wins
            best, best_value = name, value
    return best, best_value


def test_every_customer_of_a_batch_gets_the_rule_applied_one_by_one() -> None:
    rng = np.random.default_rng(4)
    n = 2000
    stages = rng.choice([*STAGES, "unknown"], n)
    churn = rng.choice([0.0, 0.2, 0.5, 0.9, 1.0, np.nan], n)
    clv = rng.choice([0.0, 50.0, 199.99, 200.0, 1000.0, np.nan], n)
    policy = Policy(DecisionSettings(actions=PLAYBOOK), STAGES)
    decided = policy.decide(stages, churn, clv)
    for i in range(n):
        expected = _one_by_one(str(stages[i]), float(churn[i]), float(clv[i]))
        assert (decided.action[i], decided.value[i]) == expected, (stages[i], churn[i], clv[i])


def test_an_empty_playbook_decides_nothing() -> None:
    policy = Policy(DecisionSettings(actions={}), STAGES)
    decided = policy.decide(np.array(["retention"]), np.array([0.9]), np.array([500.0]))
    assert decided.action.tolist() == [NO_ACTION] and decided.value.tolist() == [0.0]


def test_of_equal_values_the_first_action_in_the_playbook_wins_and_infinities_are_decided() -> None:
    twins = {
        "call": Action(kind="retention", cost=5, uplift=0.2, stages=["retention"]),
        "email": Action(kind="retention", cost=5, uplift=0.2, stages=["retention"]),
        "ask": Action(kind="growth", cost=0.5, uplift=0.1, stages=["advocacy"]),
    }
    policy = Policy(DecisionSettings(actions=twins), STAGES)
    decided = policy.decide(
        np.array(["retention", "retention", "advocacy", "retention"]),
        np.array([0.5, 0.5, 0.1, 0.5]),
        np.array([100.0, np.inf, 10.0, -np.inf]),
    )
    assert decided.action.tolist() == ["call", "call", "ask", NO_ACTION]
    assert decided.value.tolist() == [5.0, np.inf, (1 - 0.1) * 0.1 * 10.0 - 0.5, 0.0]
    reversed_ = Policy(DecisionSettings(actions=dict(reversed(twins.items()))), STAGES)
    assert (
        reversed_.decide(np.array(["retention"]), np.array([0.5]), np.array([100.0])).action[0]
        == "email"
    )
