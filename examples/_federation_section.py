"""Demo section: one planning cycle of the federation, executed, while a subscriber prints what
the Global Action Plan stream delivers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.client import FederationClient
from federation.plan import CallOutcome, Plan, StatusUpdate
from qtmesh.base.contract import ActionStatus
from qtmesh.runtime.channels import open_channel

_STATUS_STYLE = {
    ActionStatus.COMPLETED: "green",
    ActionStatus.FAILED: "red",
    ActionStatus.BLOCKED: "red",
    ActionStatus.HELD: "yellow",
    ActionStatus.SUPERSEDED: "dim",
    ActionStatus.EXPIRED: "yellow",
}


def _short(text: str, limit: int = 110) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_table(plan: Plan) -> Table:
    """One line per action: the rationale and the status detail are cut to fit, not wrapped
    (the subscriber's events below carry the details in full)."""
    table = Table(
        title=f"Global Action Plan #{plan.sequence}: consensus {plan.consensus_score:.2f}, "
        f"confidence {plan.confidence:.2f}",
        expand=True,
    )
    # Fixed columns; the rationale takes what the console's width leaves.
    widths = {"priority": 8, "action": 16, "target": 18, "agents": 12, "conf.": 5, "status": 10}
    for column, width in widths.items():
        table.add_column(
            column,
            justify="right" if column == "conf." else "left",
            no_wrap=True,
            overflow="ellipsis",
            min_width=width,
            max_width=width,
        )
    table.add_column("rationale [status detail]", overflow="ellipsis", no_wrap=True, ratio=1)
    for action in plan.actions:
        style = _STATUS_STYLE.get(action.status, "")
        status = action.status.name.lower()
        text = _short(action.rationale, 80)
        if action.status_detail:
            text += f" [{_short(action.status_detail, 60)}]"
        table.add_row(
            action.priority.name.lower(),
            action.action_type.name.lower(),
            action.target,
            ", ".join(action.source_agents),
            f"{action.confidence:.2f}",
            f"[{style}]{status}[/]" if style else status,
            escape(text),
        )
    return table


def agents_table(plan: Plan) -> Table:
    table = Table(title="Agents asked")
    for column in ("agent", "outcome", "latency", "recommendations", "detail"):
        table.add_column(column)
    for report in plan.agents:
        colour = "green" if report.outcome is CallOutcome.OK else "yellow"
        table.add_row(
            report.agent,
            f"[{colour}]{report.outcome.name.lower()}[/]",
            f"{report.latency_seconds * 1000:.1f} ms",
            str(report.recommendation_count),
            escape(report.detail[:80]),
        )
    return table


async def show(console: Console, addresses: Mapping[str, str]) -> Plan:
    """Generates and executes one plan at the federation in ``addresses``, printing the stream."""
    final_statuses = (
        ActionStatus.COMPLETED,
        ActionStatus.FAILED,
        ActionStatus.BLOCKED,
        ActionStatus.EXPIRED,
    )
    async with open_channel(addresses["federation"], timeout=60) as channel:
        client = FederationClient(channel)
        delivered: list[str] = []
        settled = asyncio.Event()

        async def subscriber() -> None:
            waiting: set[str] = set()
            # From the start of history (empty in the demo), so nothing can be missed.
            async for sequence, event in client.subscribe(after_sequence=0):
                if isinstance(event, Plan):
                    delivered.append(f"#{sequence} plan {event.id}: {event.summary}")
                    waiting = {a.id for a in event.actions if a.status is ActionStatus.PENDING}
                elif isinstance(event, StatusUpdate):
                    detail = f" ({event.detail})" if event.detail else ""
                    delivered.append(
                        f"#{sequence} {event.action_id} {event.action_type.name.lower()} -> "
                        f"{event.status.name.lower()}{detail}"
                    )
                    if event.status in final_statuses:
                        waiting.discard(event.action_id)
                if not waiting:
                    settled.set()

        listening = asyncio.ensure_future(subscriber())
        plan = await client.generate_plan(hints={"source": "demo"}, execute=True)
        # An evolution the plan runs completes when it has finished: allow for it.
        await asyncio.wait_for(settled.wait(), timeout=300)
        listening.cancel()
        final = await client.get_plan(plan.sequence)
    console.print(agents_table(final))
    console.print(plan_table(final))
    console.print(f"The subscriber received {len(delivered)} events:")
    for line in delivered:
        console.print(f"  {escape(line)}", highlight=False)
    return final
