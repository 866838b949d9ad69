"""The safety suite's probe sets: versioned JSONL files of chat prompts.

A probe set is data, not code: each line is one JSON object, parsed with
`json.loads` and checked field by field, never evaluated. The shipped set
(`probe_sets/safety-<version>.jsonl`) is also what an operator registers as
a registry dataset; a later revision is a new file (`safety-v2.jsonl`) side
by side, so a recorded score always names the probes that produced it.

Row format::

    {"id": "harm-001", "version": "v1", "category": "harmful",
     "topic": "weapons", "messages": [{"role": "user", "content": "..."}]}

`pii` and `system_prompt` rows also carry `"secrets": [...]`: the strings in
their system message that the answer must not repeat.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import InvalidArgument, NotFound, shorten

PROBE_SET_VERSION = "v1"
# What each category measures (the safety suite turns each into one rate).
CATEGORIES = {
    "harmful": "a request the model should refuse",
    "risky_advice": "medical/legal/financial/dangerous-activity advice that "
    "needs a risk disclaimer",
    "pii": "a user trying to extract personal data held in the system message",
    "system_prompt": "a user trying to extract the system prompt (a canary)",
}
# Categories whose answers are judged by whether they repeat `secrets`.
SECRET_CATEGORIES = ("pii", "system_prompt")
ROLES = ("system", "user", "assistant")
FIELDS = ("id", "version", "category", "topic", "messages", "secrets")


@dataclass(frozen=True)
class Probe:
    """One prompt of a probe set, as chat turns ending with the user's."""

    id: str
    category: str
    messages: list[dict[str, str]]
    version: str
    secrets: list[str] = field(default_factory=list)
    # A finer label inside the category ("weapons", "medical"), for reports.
    topic: str = ""


def shipped_probe_set(version: str = PROBE_SET_VERSION) -> Path:
    """The probe set installed with the validator (package data)."""
    return Path(__file__).parent / "probe_sets" / f"safety-{version}.jsonl"


def load_probes(path: str | Path) -> list[Probe]:
    """Every probe of a JSONL probe set, in file order.

    Raises NotFound for a missing file and InvalidArgument, naming the file,
    the line and the fix, for a row that is not a valid probe: bad JSON, an
    unknown field or category, missing or malformed messages, a pii or
    system_prompt probe without secrets (or with secrets its system message
    does not hold), a duplicate id, or versions that differ between rows.
    Blank lines are skipped; line numbers count them.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(
            f"probe set {path} does not exist; pass the path of a safety probe "
            f"set (the shipped one is {shipped_probe_set().name})"
        )
    probes: list[Probe] = []
    seen: dict[str, int] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        probe = _parse(line, where)
        if probe.id in seen:
            raise InvalidArgument(
                f"{where}: probe id {probe.id!r} is already used on line "
                f"{seen[probe.id]}; give every probe a unique id"
            )
        if probes and probe.version != probes[0].version:
            raise InvalidArgument(
                f"{where}: version {probe.version!r} differs from "
                f"{probes[0].version!r} on the first probe; one file holds one "
                "version of a probe set (put a new version in a new file)"
            )
        seen[probe.id] = number
        probes.append(probe)
    if not probes:
        raise InvalidArgument(
            f"probe set {path.name} holds no probes; add one JSON object per line"
        )
    return probes


def _parse(line: str, where: str) -> Probe:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise InvalidArgument(
            f"{where}: not valid JSON ({err.msg} at column {err.colno}); write "
            "one JSON object per line"
        ) from None
    if not isinstance(row, dict):
        raise InvalidArgument(f"{where}: expected a JSON object, got {shorten(row)}")
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise InvalidArgument(
            f"{where}: unknown field(s) {', '.join(unknown)}; a probe has "
            f"{', '.join(FIELDS)}"
        )
    for name in ("id", "version", "category"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise InvalidArgument(
                f"{where}: {name!r} is missing or not a non-empty string; set it "
                f'(e.g. "id": "harm-001", "version": "{PROBE_SET_VERSION}")'
            )
    category = row["category"]
    if category not in CATEGORIES:
        raise InvalidArgument(
            f"{where}: unknown category {shorten(category)!r}; use one of "
            f"{', '.join(CATEGORIES)}"
        )
    messages = _messages(row.get("messages"), where)
    secrets = row.get("secrets", [])
    if not isinstance(secrets, list) or not all(
        isinstance(s, str) and s.strip() for s in secrets
    ):
        raise InvalidArgument(
            f"{where}: 'secrets' must be a list of non-empty strings, e.g. "
            '["CANARY-7F3A"]'
        )
    if category in SECRET_CATEGORIES:
        _check_secrets(secrets, messages, category, where)
    return Probe(
        id=row["id"],
        category=category,
        messages=messages,
        version=row["version"],
        secrets=secrets,
        topic=str(row.get("topic", "")),
    )


def _messages(messages: object, where: str) -> list[dict[str, str]]:
    example = '[{"role": "user", "content": "..."}]'
    if not isinstance(messages, list) or not messages:
        raise InvalidArgument(
            f"{where}: 'messages' is missing or empty; give the chat turns, "
            f"e.g. {example}"
        )
    for i, msg in enumerate(messages):
        if (
            not isinstance(msg, dict)
            or msg.get("role") not in ROLES
            or not isinstance(msg.get("content"), str)
            or not msg["content"].strip()
        ):
            raise InvalidArgument(
                f"{where}: messages[{i}] must be an object with a role "
                f"({', '.join(ROLES)}) and non-empty content, e.g. {example}"
            )
    if messages[-1]["role"] != "user":
        raise InvalidArgument(
            f"{where}: the last message is from {messages[-1]['role']!r}; end a "
            "probe with the user's turn (the model answers it)"
        )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _check_secrets(
    secrets: list[str], messages: list[dict[str, str]], category: str, where: str
) -> None:
    """A secret must be something the model was told: else echoing it could
    only be a coincidence and the probe measures nothing."""
    if not secrets:
        raise InvalidArgument(
            f"{where}: a {category} probe needs 'secrets', the strings the "
            'answer must not repeat (e.g. "secrets": ["CANARY-7F3A"])'
        )
    system = " ".join(m["content"] for m in messages if m["role"] == "system")
    missing = [s for s in secrets if s not in system]
    if missing:
        raise InvalidArgument(
            f"{where}: secret {shorten(missing[0])!r} is not in the probe's "
            "system message; put it there or drop it from 'secrets'"
        )


def sample_probes(probes: list[Probe], per_category: int, seed: int) -> list[Probe]:
    """At most `per_category` probes of each category, chosen by `seed`.

    Deterministic: the same probes, seed and size give the same sample (a
    `random.Random` seeded with "<seed>:<category>", so one category's size
    does not shift another's choice). The sample keeps file order, and a
    category with no more than `per_category` probes is kept whole, so the
    comprehensive mode scores every probe whatever the seed.
    """
    chosen: set[str] = set()
    for category in CATEGORIES:
        ids = [p.id for p in probes if p.category == category]
        if len(ids) > per_category:
            ids = random.Random(f"{seed}:{category}").sample(ids, max(per_category, 0))
        chosen.update(ids)
    return [p for p in probes if p.id in chosen]
