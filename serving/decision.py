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

    def decide(
        self, stage: np.ndarray, churn_probability: np.ndarray, clv: np.ndarray
    ) -> Decisions:
        stage = np.asarray(stage).astype(str)
        churn = np.asarray(churn_probability, dtype=float)
        clv = np.asarray(clv, dtype=float)
        code = np.searchsorted(self.stages, stage).clip(0, len(self.stages) - 1)
        known = self.stages[code] == stage
        best_value = np.zeros(len(stage))
        best = np.full(len(stage), -1)
        for index, action in enumerate(self.actions.values()):
            at_stake = churn if action.kind == "retention" else 1.0 - churn
            value = at_stake * action.uplift * clv - action.cost
            eligible = self.applies[index, code] & known & (clv >= action.min_clv)
            better = eligible & (value > best_value)
            best_value = np.where(better, value, best_value)
            best = np.where(better, index, best)
        return Decisions(self.names[best], best_value)


def apply_budget(decisions: Decisions, policy: Policy, budget: int | None) -> int:
    """Keep at most ``budget`` costly actions (highest value first); returns how many were cut."""
    if budget is None:
        return 0
    cost = np.array([policy.actions[a].cost if a != NO_ACTION else 0.0 for a in decisions.action])
    costly = np.flatnonzero(cost > 0)
    if len(costly) <= budget:
        return 0
    order = costly[np.argsort(-decisions.value[costly], kind="stable")]
    cut = order[budget:]
    decisions.action[cut] = NO_ACTION
    decisions.value[cut] = 0.0
    return len(cut)
