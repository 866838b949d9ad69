"""Chat rows ({"messages": [...]}): roles, contents and the order of turns."""

from __future__ import annotations

import itertools
from typing import Any


def chat_issues(msgs: Any) -> list[tuple[str, str]]:
    """(kind, problem) pairs of a row's "messages" value; empty when usable.

    kind is "schema" or "no_assistant", as `datasets.row_issues` reports them.
    """
    if not isinstance(msgs, list) or not msgs:
        return [("schema", "'messages' must be a non-empty list")]
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in (
            "system",
            "user",
            "assistant",
        ):
            return [("schema", f"messages[{i}] needs role system, user or assistant")]
        if not isinstance(m.get("content"), str):
            return [("schema", f"messages[{i}].content must be a string")]
    order = _turn_order_problem(msgs)
    if order:
        return [("schema", order)]
    if not any(m["role"] == "assistant" for m in msgs):
        roles = ", ".join(m["role"] for m in msgs)
        return [
            (
                "no_assistant",
                f"no assistant message to learn from (turns: {roles}); add a "
                '{"role": "assistant", "content": ...} turn with the answer',
            )
        ]
    return []


def _turn_order_problem(msgs: list[dict[str, Any]]) -> str | None:
    """Why the user/assistant turns do not alternate from a user turn, if so.

    Most chat templates raise on such rows (or render an empty prompt before
    a leading answer), which would surface as a crash mid-tokenisation;
    refusing the row names the line and the turn to fix instead.
    """
    turns = [(i, m["role"]) for i, m in enumerate(msgs) if m["role"] != "system"]
    if turns and turns[0][1] != "user":
        return (
            f"messages[{turns[0][0]}] is an assistant turn with no user turn before "
            "it; after optional system turns a chat must start with the user: add "
            'a {"role": "user", "content": ...} turn before the answer'
        )
    for (before, role_before), (i, role) in itertools.pairwise(turns):
        if role == role_before:
            missing = "assistant" if role == "user" else "user"
            return (
                f"messages[{i}] is a second {role} turn in a row (after "
                f"messages[{before}]); user and assistant turns must alternate, so "
                f"merge the two or add the {missing} turn between them"
            )
    return None
