"""What a rollout is asked to do: its strategy's settings, with defaults.

Zero values mean "the default" (as in the protobuf contract), so
`with_defaults` fills them in; each strategy checks the settings it uses
(`strategies/*.check`), naming the request field that is wrong.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.gateway.analysis import AnalysisSettings

FULL_WEIGHT = 10_000
DEFAULT_ALIAS = "production"
NO_ALIAS = "-"


@dataclass(frozen=True)
class CanaryConfig:
    steps_bps: tuple[int, ...] = ()
    step_interval_s: float = 0.0


@dataclass(frozen=True)
class AbTestConfig:
    candidate_weight_bps: int = 0
    duration_s: float = 0.0
    sample_size: int = 0
    confidence: float = 0.0


@dataclass(frozen=True)
class ShadowConfig:
    mirror_bps: int = 0
    duration_s: float = 0.0
    sample_size: int = 0
    min_agreement: float = 0.0


@dataclass(frozen=True)
class BlueGreenConfig:
    warmup_requests: int = 0
    warmup_prompt: str = ""
    keep_previous_s: float = 0.0


@dataclass(frozen=True)
class RolloutSettings:
    strategy: str = ""
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    ab_test: AbTestConfig = field(default_factory=AbTestConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    blue_green: BlueGreenConfig = field(default_factory=BlueGreenConfig)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    promote_alias: str = ""
    manual_decision: bool = False
    tick_s: float = 0.0

    def with_defaults(self) -> RolloutSettings:
        c, a, s, b = self.canary, self.ab_test, self.shadow, self.blue_green
        return dataclasses.replace(
            self,
            strategy=self.strategy or "canary",
            canary=CanaryConfig(
                steps_bps=tuple(c.steps_bps) or (500, 2500, 5000),
                step_interval_s=c.step_interval_s or 60.0,
            ),
            ab_test=AbTestConfig(
                candidate_weight_bps=a.candidate_weight_bps or 5000,
                duration_s=a.duration_s or 3600.0,
                sample_size=a.sample_size,
                confidence=a.confidence or 0.95,
            ),
            shadow=ShadowConfig(
                mirror_bps=s.mirror_bps or FULL_WEIGHT,
                duration_s=s.duration_s or 600.0,
                sample_size=s.sample_size,
                min_agreement=s.min_agreement,
            ),
            blue_green=BlueGreenConfig(
                warmup_requests=b.warmup_requests or 3,
                warmup_prompt=b.warmup_prompt or "Hello",
                keep_previous_s=b.keep_previous_s or 600.0,
            ),
            analysis=_analysis_defaults(self.analysis),
            promote_alias=self.promote_alias or DEFAULT_ALIAS,
            tick_s=self.tick_s or 1.0,
        )

    @property
    def alias(self) -> str:
        """The alias promotion moves, or "" for none."""
        return "" if self.promote_alias == NO_ALIAS else self.promote_alias

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutSettings:
        canary = dict(data.get("canary", {}))
        canary["steps_bps"] = tuple(canary.get("steps_bps", ()))
        return cls(
            strategy=data.get("strategy", ""),
            canary=CanaryConfig(**canary),
            ab_test=AbTestConfig(**data.get("ab_test", {})),
            shadow=ShadowConfig(**data.get("shadow", {})),
            blue_green=BlueGreenConfig(**data.get("blue_green", {})),
            analysis=AnalysisSettings(**data.get("analysis", {})),
            promote_alias=data.get("promote_alias", ""),
            manual_decision=bool(data.get("manual_decision", False)),
            tick_s=float(data.get("tick_s", 0.0)),
        )


def _analysis_defaults(given: AnalysisSettings) -> AnalysisSettings:
    """Zero fields of `given` take AnalysisSettings' defaults."""
    default = AnalysisSettings()
    return AnalysisSettings(
        **{
            f.name: getattr(given, f.name) or getattr(default, f.name)
            for f in dataclasses.fields(AnalysisSettings)
        }
    )


def check_common(settings: RolloutSettings) -> None:
    """Checks shared by every strategy (settings with defaults filled in)."""
    settings.analysis.check("settings.analysis")
    if not (math.isfinite(settings.tick_s) and 0.01 <= settings.tick_s <= 60):
        raise InvalidArgument(
            f"settings.tick_s must be in [0.01, 60] seconds, got {settings.tick_s}",
            field="settings.tick_s",
        )
    alias = settings.promote_alias
    if alias != NO_ALIAS and not (
        alias.replace("-", "").replace("_", "").isalnum()
        and alias[:1].isalpha()
        and alias.islower()
        and len(alias) <= 64
    ):
        raise InvalidArgument(
            f"settings.promote_alias {alias[:80]!r} must be a lower-case identifier "
            "(e.g. production), or '-' to move no alias",
            field="settings.promote_alias",
        )


def check_duration(value: float, path: str, *, low: float = 0.0) -> None:
    if not (math.isfinite(value) and low <= value <= 30 * 86_400):
        raise InvalidArgument(
            f"{path} must be in [{low:g}, 2592000] seconds (30 days), got {value}",
            field=path,
        )


def check_share(value: int, path: str, *, allow_full: bool = True) -> None:
    high = FULL_WEIGHT if allow_full else FULL_WEIGHT - 1
    if not 0 < value <= high:
        raise InvalidArgument(
            f"{path} must be in (0, {high}] basis points (10000 = 100%), got {value}",
            field=path,
        )
