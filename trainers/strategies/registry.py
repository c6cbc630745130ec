"""The one list of search strategies, and the spec's ``strategy`` field that picks one.

Everything outside ``trainers/strategies/`` reaches a strategy through here: ``get(name)``
(or a spec's ``strategy.strategy``) returns its
:class:`~schedsearch.trainers.strategies.strategy.Strategy` object. Adding a strategy is its
folder (config model, ``strategy.py``, runner) plus one line in ``STRATEGIES`` and one field in
:class:`StrategyConfig`.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

from pydantic import model_validator

from schedsearch.trainers.strategies.autolrs.config import AutoLRSConfig
from schedsearch.trainers.strategies.autolrs.strategy import AutoLRS
from schedsearch.trainers.strategies.config import StrategyModel
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.hdet.strategy import HDET
from schedsearch.trainers.strategies.law.config import LawConfig
from schedsearch.trainers.strategies.law.strategy import Law
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.strategy import PBT
from schedsearch.trainers.strategies.strategy import Rule, Strategy

# Every strategy's name, as a type (the spec's and the status's field, the pods' role).
StrategyName = Literal["autolrs", "pbt", "hdet", "law"]
STRATEGIES: Final[dict[str, Strategy[Any]]] = {
    strategy.name: strategy for strategy in (AutoLRS(), PBT(), HDET(), Law())
}
NAMES: Final = tuple(STRATEGIES)
if get_args(StrategyName) != NAMES:
    raise ImportError(f"StrategyName {get_args(StrategyName)} does not list {NAMES}")


def get(name: str) -> Strategy[Any]:
    """The strategy called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"strategy: {name!r} is not one of {', '.join(NAMES)}") from None


class StrategyConfig(StrategyModel):
    """Exactly one strategy's parameters, under its name."""

    autolrs: AutoLRSConfig | None = None
    pbt: PBTConfig | None = None
    hdet: HDETConfig | None = None
    law: LawConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StrategyConfig:
        chosen = [name for name in NAMES if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"strategy must set exactly one of {', '.join(NAMES)}"
                + (f" (got {', '.join(chosen)})" if chosen else " (got none)")
            )
        return self

    @property
    def name(self) -> StrategyName:
        for name in get_args(StrategyName):
            if getattr(self, name) is not None:
                return name  # type: ignore[no-any-return]
        raise AssertionError("validated to hold one strategy")

    @property
    def config(self) -> Any:
        """The chosen strategy's parameters."""
        return getattr(self, self.name)

    @property
    def strategy(self) -> Strategy[Any]:
        """The chosen strategy's object."""
        return STRATEGIES[self.name]


def exactly_one_rule() -> str:
    """CEL: exactly one strategy is set (the rule of the spec's ``strategy`` field)."""
    return " + ".join(f"(has(self.{name}) ? 1 : 0)" for name in NAMES) + " == 1"


def spec_rules() -> list[Rule]:
    """Every strategy's CEL rules over the spec (the CRD's), each guarded so it applies only
    when that strategy is the one set."""
    return [
        Rule(
            f"!has(self.strategy.{name}) || ({rule.expression})",
            rule.message,
            rule.field,
            rule.cluster_only,
        )
        for name, strategy in STRATEGIES.items()
        for rule in strategy.rules
    ]
