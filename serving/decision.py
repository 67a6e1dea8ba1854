"""The retention decision: which playbook action, if any, is worth taking for a customer.

Each action in ``decision.actions`` has a cost, an assumed success rate (``uplift``), the
stages it applies to and a minimum CLV. Its expected value for one customer is

* retention actions: ``churn_probability x uplift x clv - cost`` (the value saved when the
  action keeps a customer who would have left);
* growth actions: ``(1 - churn_probability) x uplift x clv - cost`` (the value added to a
  customer who stays: a second purchase, a referral, a converted lead).

The action with the highest positive expected value is chosen, else ``none`` with value 0.
In batch scoring an optional budget caps the number of costly actions: the customers with
the highest action values keep theirs, the others get ``none``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numba
import numpy as np

from clm.errors import ConfigError
from clm.settings import Action, DecisionSettings

__all__ = ["NO_ACTION", "Decisions", "Policy", "apply_budget"]

NO_ACTION = "none"


class Decisions:
    """Chosen action and its expected value per customer (arrays of one length)."""

    def __init__(self, action: np.ndarray, value: np.ndarray) -> None:
        self.action, self.value = action, value


class Policy:
    """Vectorised choice over the playbook; see the module doc."""

    def __init__(self, settings: DecisionSettings, stages: tuple[str, ...]) -> None:
        for name, action in settings.actions.items():
            unknown = sorted(set(action.stages) - set(stages))
            if unknown:
                raise ConfigError(
                    f"decision.actions.{name}.stages: {unknown} are not stages {list(stages)}"
                )
            if name == NO_ACTION:
                raise ConfigError(f"decision.actions: '{NO_ACTION}' is reserved for no action")
        self.actions: Mapping[str, Action] = dict(settings.actions)
        self.budget = settings.budget
        # Stage codes index the sorted stages; row a of `applies` says where action a applies.
        self.stages = np.array(sorted(stages))
        self.applies = np.array(
            [np.isin(self.stages, action.stages) for action in self.actions.values()]
        ).reshape(len(self.actions), len(stages))
        self.names = np.array([*self.actions, NO_ACTION], dtype=object)  # index -1: none
        actions = list(self.actions.values())
        self.retention = np.array([a.kind == "retention" for a in actions], dtype=bool)
        self.uplift = np.array([a.uplift for a in actions], dtype=float)
        self.cost = np.array([a.cost for a in actions], dtype=float)
        self.min_clv = np.array([a.min_clv for a in actions], dtype=float)
        # Row s: where each action applies at stage code s, plus a row of False for
        # stages the playbook does not know.
        self.applies_at = np.vstack([self.applies.T, np.zeros(len(actions), dtype=bool)])

    def decide(
        self, stage: np.ndarray, churn_probability: np.ndarray, clv: np.ndarray
    ) -> Decisions:
        stage = np.asarray(stage).astype(str)
        churn = np.asarray(churn_probability, dtype=float)
        clv = np.asarray(clv, dtype=float)
        code = np.searchsorted(self.stages, stage).clip(0, len(self.stages) - 1)
        code = np.where(self.stages[code] == stage, code, len(self.stages))  # unknown: no row
        if not len(self.actions):
            return Decisions(np.full(len(stage), NO_ACTION, dtype=object), np.zeros(len(stage)))
        best = np.empty(len(stage), dtype=np.int64)
        best_value = np.empty(len(stage), dtype=float)
        _choose(
            code, churn, clv, self.applies_at, self.retention, self.uplift, self.cost,
            self.min_clv, best, best_value,
        )  # fmt: skip
        return Decisions(self.names[best], best_value)


@numba.njit(cache=True, nogil=True)
def _choose(
    code: np.ndarray, churn: np.ndarray, clv: np.ndarray, applies_at: np.ndarray,
    retention: np.ndarray, uplift: np.ndarray, cost: np.ndarray, min_clv: np.ndarray,
    best: np.ndarray, best_value: np.ndarray,
) -> None:  # fmt: skip
    """Each customer's action of highest value (the first of the best, in the playbook's
    order) among those that apply at their stage and CLV, if that value is positive; else
    -1 (none) with value 0. One pass instead of a (customers, actions) matrix of values."""
    for i in range(code.shape[0]):
        top, pick = -np.inf, -1
        for a in range(uplift.shape[0]):
            if not applies_at[code[i], a] or not clv[i] >= min_clv[a]:
                continue
            at_stake = churn[i] if retention[a] else 1.0 - churn[i]
            value = at_stake * uplift[a] * clv[i] - cost[a]
            if value > top:  # a NaN value never wins
                top, pick = value, a
        if pick >= 0 and top > 0:
            best[i], best_value[i] = pick, top
        else:
            best[i], best_value[i] = -1, 0.0


def apply_budget(decisions: Decisions, policy: Policy, budget: int | None, ids: np.ndarray) -> int:
    """Keep at most ``budget`` costly actions, highest value first and, among equal values,
    the lower ``customer_id`` (the same whatever order the rows come in); returns how many
    were cut."""
    if budget is None:
        return 0
    cost = np.array([policy.actions[a].cost if a != NO_ACTION else 0.0 for a in decisions.action])
    costly = np.flatnonzero(cost > 0)
    if len(costly) <= budget:
        return 0
    keys = np.asarray(ids, dtype=str)[costly]
    order = costly[np.lexsort((keys, -decisions.value[costly]))]
    cut = order[budget:]
    decisions.action[cut] = NO_ACTION
    decisions.value[cut] = 0.0
    return len(cut)
