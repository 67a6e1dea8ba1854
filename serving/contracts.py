"""Request and response bodies of the scoring service (they make its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "CustomerIn",
    "CustomerView",
    "FeatureValue",
    "Reason",
    "ScoreRequest",
    "ScoreResponse",
    "ScoreResult",
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# Integers as JSON and the models carry them: 64-bit.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
FeatureValue = FiniteFloat | Int64 | bool | Annotated[str, Field(max_length=200)] | None
# A value the service gives back (a stored feature may be text of any length).
ShownValue = float | int | bool | str | None
CustomerId = Annotated[
    str,
    # Spaces only, as DuckDB's trim: an id with a tab is another id, in the data as here.
    AfterValidator(lambda text: text.strip(" ")),
    StringConstraints(min_length=1, max_length=200, pattern=r"\S"),
    Field(
        description="Your id of the customer, as in the transactions (surrounding spaces are "
        "trimmed, as they are from the data's ids).",
        examples=["C0000042"],
    ),
]


class CustomerIn(BaseModel):
    """One customer to score: by id (features from the online store), or with features."""

    model_config = ConfigDict(extra="forbid")

    customer_id: CustomerId
    features: dict[str, FeatureValue] | None = Field(
        None,
        description="Feature values that override the stored ones (any subset; names as in "
        "clm features build). A customer unknown to the store is scored as new: features "
        "not given are those of a customer with no history, in stage 'awareness'; the stage "
        "is not derived from the others, so give it with them.",
        examples=[{"stage": "retention", "days_since_last_purchase": 12, "purchase_days": 3}],
    )


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customers: list[CustomerIn] = Field(
        min_length=1,
        max_length=1000,
        description="1 to 1,000 customers (serving.max_customers); results keep this order.",
        examples=[[{"customer_id": "C0000042"}]],
    )


class Reason(BaseModel):
    feature: str = Field(description="Feature name.", examples=["days_since_last_purchase"])
    value: ShownValue = Field(description="The customer's value of it.", examples=[143])
    contribution: float = Field(
        description="Its push on the churn log-odds (XGBoost's per-row SHAP value); positive "
        "raises the risk.",
        examples=[0.82],
    )
    direction: Literal["raises risk", "lowers risk"]


class ScoreResult(BaseModel):
    customer_id: str = Field(examples=["C0000042"])
    known: bool = Field(description="False when the id is not in the online store (scored as new).")
    stage: str = Field(description="Lifecycle stage now.", examples=["retention"])
    churn_probability: float = Field(
        description="P(no purchase in the churn horizon), calibrated.", examples=[0.42]
    )
    churn_risk: Literal["low", "medium", "high", "prospect"] = Field(
        description="Band of churn_probability (serving.risk_medium / risk_high) for a "
        "customer who has bought; 'prospect' for one who has not (stage awareness or "
        "consideration), whose churn_probability is the chance of no first purchase."
    )
    next_stage: str = Field(
        description="Most likely stage after the stage horizon.", examples=["retention"]
    )
    next_stage_probabilities: dict[str, float] = Field(
        description="Probability of every stage after the stage horizon.",
        examples=[{"retention": 0.7, "churned": 0.2, "advocacy": 0.1}],
    )
    expected_purchases: float = Field(description="Purchase days in the CLV horizon.")
    expected_spend: float = Field(description="Spend in the CLV horizon, currency units.")
    clv: float = Field(description="Discounted margin over the CLV horizon.", examples=[118.4])
    action: str = Field(
        description="The playbook action with the highest expected value, or none.",
        examples=["retention_offer"],
    )
    action_value: float = Field(
        description="Expected value of the action net of its cost.", examples=[3.1]
    )
    reasons: list[Reason] = Field(description="Top features pushing the churn risk.")
    model_versions: dict[str, str] = Field(
        description="Registered model versions used.",
        examples=[{"clm-churn": "3", "clm-stage": "2", "clm-clv": "2"}],
    )


class ScoreResponse(BaseModel):
    results: list[ScoreResult]


class CustomerView(BaseModel):
    customer_id: str
    as_of: str | None = Field(description="Cutoff of the stored features.")
    features: dict[str, ShownValue]
    score: ScoreResult
