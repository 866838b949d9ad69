"""Model cards rendered from recorded facts: lineage, training, metrics, reports."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.registry.db import ArtifactRow, LineageEdgeRow, ValidationReportRow
from services.registry.queries import resolve_ref
from services.registry.repository import Registry

_TRAINING_KEYS = (
    "train_job_id",
    "train_rows",
    "eval_rows",
    "dropped_rows",
    "task_type",
    "environment",
)
_HYPER_KEYS = ("method", "rank", "alpha", "target_modules", "lora_dropout")


def _ref(row: ArtifactRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "ref": f"{row.name}:{row.version}",
        "kind": row.kind,
        "digest": row.digest,
    }


def build_card(registry: Registry, ref: str) -> dict[str, Any]:
    """The facts of one version as a JSON-ready dict."""

    def work(session: Session) -> dict[str, Any]:
        row = resolve_ref(session, ref)
        artifact = registry._load(session, row)
        parents = session.execute(
            select(ArtifactRow, LineageEdgeRow.relation)
            .join(LineageEdgeRow, LineageEdgeRow.parent_id == ArtifactRow.id)
            .where(LineageEdgeRow.child_id == row.id)
            .order_by(LineageEdgeRow.relation, ArtifactRow.name)
        ).all()
        children = session.execute(
            select(ArtifactRow, LineageEdgeRow.relation)
            .join(LineageEdgeRow, LineageEdgeRow.child_id == ArtifactRow.id)
            .where(LineageEdgeRow.parent_id == row.id)
            .order_by(ArtifactRow.name, ArtifactRow.version)
        ).all()
        report = session.scalar(
            select(ValidationReportRow)
            .where(ValidationReportRow.candidate_id == row.id)
            .order_by(ValidationReportRow.create_time.desc())
            .limit(1)
        )
        return _card(artifact, parents, children, report)

    return registry.db.read(work)


def _card(artifact, parents, children, report) -> dict[str, Any]:
    meta = artifact.metadata
    by_relation: dict[str, list[dict[str, Any]]] = {}
    for parent, relation in parents:
        by_relation.setdefault(relation, []).append(_ref(parent))
    hyper = dict(meta.get("train_config") or {})
    for key in _HYPER_KEYS:
        if key in meta and key not in hyper:
            hyper[key] = meta[key]
    training = {k: meta[k] for k in _TRAINING_KEYS if k in meta}
    validation = None
    if report is not None:
        body = report.report or {}
        validation = {
            "report_id": report.id,
            "passed": report.passed,
            "score": report.score,
            "score_metric": body.get("score_metric", ""),
            "gates": [
                {k: g.get(k) for k in ("name", "passed", "value", "threshold")}
                for g in body.get("gates", [])
            ],
            "mode": body.get("mode", ""),
            "overall_score": body.get("overall_score"),
            "grade": body.get("grade", ""),
            "suites": [
                {
                    "name": r.get("name", ""),
                    "score": r.get("score", 0.0),
                    "weight": r.get("weight", 0.0),
                    "passed": r.get("passed", False),
                    "failed_checks": [
                        {k: c.get(k) for k in ("name", "value", "threshold", "message")}
                        for c in r.get("checks", [])
                        if not c.get("passed", False)
                    ],
                }
                for r in body.get("suites", [])
            ],
            "recommendations": list(body.get("recommendations", [])),
            "comparisons": [
                {
                    k: c.get(k)
                    for k in (
                        "target",
                        "model_id",
                        "adapter_id",
                        "overall_score",
                        "overall_delta",
                        "suite_scores",
                        "task_metric",
                        "task_improvement",
                        "meets_task_bar",
                    )
                    if k in c
                }
                for c in body.get("comparisons", [])
            ],
        }
    intended = (
        meta.get("intended_use")
        or artifact.tags.get("intended_use")
        or "Not stated. Review the validation results before serving this "
        "version to users."
    )
    return {
        "id": artifact.id,
        "name": artifact.name,
        "version": artifact.version,
        "kind": artifact.kind.value,
        "digest": artifact.digest,
        "size_bytes": artifact.size_bytes,
        "create_time": artifact.create_time.isoformat(),
        "aliases": artifact.aliases,
        "archived": artifact.archived,
        "tags": artifact.tags,
        "base_model": (by_relation.get("base_model") or [None])[0],
        "dataset": (by_relation.get("dataset") or [None])[0],
        "parents": [{**_ref(p), "relation": rel} for p, rel in parents],
        "derived": [{**_ref(c), "relation": rel} for c, rel in children],
        "hyperparameters": hyper,
        "training": training,
        "metrics": artifact.metrics,
        "validation": validation,
        "intended_use": intended,
        "files": [
            {"path": f.path, "sha256": f.sha256, "size_bytes": f.size_bytes}
            for f in artifact.files
        ],
    }


def _suite_lines(v: dict[str, Any]) -> list[str]:
    """The suites' scores and the comparisons, when the report has them."""
    if not v.get("suites"):
        return []
    lines = [
        "",
        f"Overall {v['overall_score'] or 0.0:.3f} (grade {v['grade']}, mode "
        f"{v['mode']}).",
        "",
        "| suite | score | weight | failed checks |",
        "| --- | --- | --- | --- |",
    ]
    for r in v["suites"]:
        failed = ", ".join(c["name"] for c in r["failed_checks"]) or "none"
        lines.append(
            f"| {r['name']} | {r['score']:.3f} | {r['weight']:.2f} | {failed} |"
        )
    for c in v["comparisons"]:
        line = (
            f"- vs {c['target']} `{c.get('adapter_id') or c.get('model_id')}`: "
            f"overall {c.get('overall_score', 0.0):.3f} "
            f"(change {c.get('overall_delta', 0.0):+.3f})"
        )
        if c.get("task_metric"):
            line += f"; {c['task_metric']} {float(c.get('task_improvement', 0.0)):+.1%}"
            if c["target"] == "base":
                bar = "meets" if c.get("meets_task_bar") else "misses"
                line += f" ({bar} the 15% bar)"
        lines.append(line)
    return lines


def _md_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, sort_keys=True) + "`"
    return str(value).replace("|", "\\|")


def render_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# {card['name']} v{card['version']}",
        "",
        f"- **Kind:** {card['kind']}",
        f"- **Id:** `{card['id']}`",
        f"- **Digest:** `{card['digest']}`",
        f"- **Size:** {card['size_bytes']} bytes",
        f"- **Created:** {card['create_time']}",
        f"- **Aliases:** {', '.join(card['aliases']) or 'none'}",
    ]
    if card["archived"]:
        lines.append("- **Archived:** yes")
    lines += ["", "## Lineage", ""]
    if card["parents"]:
        for p in card["parents"]:
            lines.append(f"- {p['relation']}: {p['ref']} (`{p['digest']}`)")
    else:
        lines.append("No recorded parents.")
    for d in card["derived"]:
        lines.append(f"- used by ({d['relation']}): {d['ref']}")
    for title, key in (("Hyperparameters", "hyperparameters"), ("Metrics", "metrics")):
        if card[key]:
            lines += ["", f"## {title}", "", "| key | value |", "| --- | --- |"]
            for k in sorted(card[key]):
                lines.append(f"| {k} | {_md_value(card[key][k])} |")
    if card["training"]:
        lines += ["", "## Training run", ""]
        for k in sorted(card["training"]):
            lines.append(f"- **{k}:** {_md_value(card['training'][k])}")
    lines += ["", "## Validation", ""]
    v = card["validation"]
    if v is None:
        lines.append("No validation report recorded.")
    else:
        verdict = "passed" if v["passed"] else "FAILED"
        lines.append(
            f"Latest report `{v['report_id']}` {verdict} with "
            f"{v['score_metric'] or 'score'} = {v['score']:.4g}."
        )
        lines += _suite_lines(v)
        if v["gates"]:
            lines += [
                "",
                "| gate | passed | value | threshold |",
                "| --- | --- | --- | --- |",
            ]
            for g in v["gates"]:
                lines.append(
                    f"| {g['name']} | {g['passed']} | {g['value']} | {g['threshold']} |"
                )
        if v["recommendations"]:
            lines += ["", "Recommendations:", ""]
            lines += [f"- {r}" for r in v["recommendations"]]
    lines += ["", "## Intended use", "", str(card["intended_use"]), ""]
    if card["tags"]:
        lines += ["## Tags", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(card["tags"].items())]
        lines.append("")
    return "\n".join(lines)
