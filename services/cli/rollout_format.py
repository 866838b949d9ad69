"""How `lorafleet rollout` prints rollouts, their events and experiments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lorafleet.v1 import gateway_pb2
from services.cli.deployments import (
    num,
    pct,
    state_name,
    step_text,
    table,
    target_text,
    when,
)


# --- formatting ---------------------------------------------------------------
def format_metrics(metrics: Mapping[str, float]) -> str:
    """``candidate_requests=40 error_rate=0.025 (limit 0.05, ok) ...``"""
    names = sorted(k for k in metrics if "." not in k)
    names.sort(key=lambda k: k != "candidate_requests")
    parts = []
    for name in names:
        text = f"{name}={num(metrics[name])}"
        limit, passed = metrics.get(f"{name}.limit"), metrics.get(f"{name}.passed")
        notes = [f"limit {num(limit)}"] if limit is not None else []
        if passed is not None:
            notes.append("ok" if passed else "FAIL")
        parts.append(text + (f" ({', '.join(notes)})" if notes else ""))
    shown = {*names, *(f"{n}.limit" for n in names), *(f"{n}.passed" for n in names)}
    parts += [f"{k}={num(v)}" for k, v in sorted(metrics.items()) if k not in shown]
    return " ".join(parts)


def experiment_table(result: gateway_pb2.ExperimentResult) -> str:
    ci = f"{num(result.confidence * 100)}% CI" if result.confidence else "CI"
    rows = [
        (
            a.arm,
            str(a.requests),
            f"{a.success_rate * 100:.1f}%",
            f"[{a.success_rate_low * 100:.1f}%, {a.success_rate_high * 100:.1f}%]",
            f"{a.latency_p50_ms:.0f}",
            f"{a.latency_p95_ms:.0f}",
            f"{a.mean_output_chars:.0f}",
        )
        for a in result.arms
    ]
    head = ("ARM", "REQUESTS", result.metric.upper() or "SUCCESS", ci)
    lines = [table((*head, "P50_MS", "P95_MS", "MEAN_CHARS"), rows)]
    p = f"p = {result.p_value:.3g}"
    if result.winner:
        lines.append(f"winner: {result.winner} ({p})")
    else:
        lines.append(f"no significant difference ({p})")
    if result.summary:
        lines.append(result.summary)
    return "\n".join(lines)


def rollout_detail(r: gateway_pb2.Rollout) -> str:
    rows = [
        ("rollout", r.id),
        ("deployment", f"{r.deployment} (revision {r.deployment_revision})"),
        ("strategy", r.strategy),
        (
            "state",
            state_name(r.state) + (f" (attempt {r.attempt})" if r.attempt else ""),
        ),
        ("weight", f"{pct(r.candidate_weight_bps)} to the candidate"),
        ("step", step_text(r.step, r.total_steps)),
        ("stable", target_text(r.stable)),
        ("candidate", target_text(r.candidate)),
        ("alias", r.settings.promote_alias or "-"),
        ("validation", r.validation_report_id or "-"),
        ("created", when(r.status.create_time)),
        ("ended", when(r.status.end_time)),
        ("message", r.message or "-"),
    ]
    if r.forced or r.reason:
        rows.append(("reason", ("forced: " if r.forced else "") + (r.reason or "-")))
    if r.status.error.code:
        rows.append(("error", f"{r.status.error.code}: {r.status.error.message}"))
    lines = [f"{k + ':':<12}{v}" for k, v in rows]
    a = r.last_analysis
    if a.decision:
        lines.append(
            f"last analysis: {a.decision} after {a.candidate_requests} candidate "
            f"requests" + (f" - {a.reason}" if a.reason else "")
        )
        checks = [
            (c.name, num(c.value), num(c.threshold), "ok" if c.passed else "FAIL")
            for c in a.checks
        ]
        if checks:
            lines.append(table(("CHECK", "VALUE", "LIMIT", "RESULT"), checks))
    if r.experiment.arms:
        lines.append("experiment:")
        lines.append(experiment_table(r.experiment))
    return "\n".join(lines)


def rollouts_table(rollouts: Sequence[gateway_pb2.Rollout]) -> str:
    rows = [
        (
            r.id,
            r.deployment,
            r.strategy,
            state_name(r.state),
            pct(r.candidate_weight_bps),
            step_text(r.step, r.total_steps),
            r.message,
        )
        for r in rollouts
    ]
    head = ("ID", "DEPLOYMENT", "STRATEGY", "STATE", "WEIGHT", "STEP", "MESSAGE")
    return table(head, rows)


def event_line(event: gateway_pb2.RolloutEvent, total_steps: int = 0) -> str:
    parts = [
        when(event.time),
        f"{event.kind:<17}",
        f"{pct(event.candidate_weight_bps):>6}",
        f"step {step_text(event.step, total_steps)}",
    ]
    if event.message:
        parts.append(event.message)
    if event.metrics:
        parts.append(f"[{format_metrics(event.metrics)}]")
    return "  ".join(parts)


# --- commands -----------------------------------------------------------------
