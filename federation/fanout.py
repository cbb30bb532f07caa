"""Fan-out: ask every agent at once, each within its share of the cycle's deadline budget.

An agent's call gets ``min(agent_timeout, time left in the cycle - reserve)``. A slow agent is
cancelled when its time is up (over gRPC the deadline travels with the call, so the agent
stops too) and costs only its own vote. UNAVAILABLE, which gRPC raises before a call reaches a
server, is retried with doubling backoff while the budget lasts; nothing else is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from federation.plan import AgentAnswer, AgentReport, CallOutcome
from qtmesh.base.contract import Agent, AgentContext, takes_timeout, validate_recommendations
from qtmesh.base.errors import DeadlineExceeded, MeshError, Unavailable


async def ask_all(
    agents: Mapping[str, Agent],
    context: AgentContext,
    *,
    agent_timeout: float,
    budget: float,
    reserve: float,
    attempts: int,
    backoff: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[AgentAnswer]:
    """Every agent's answer, in the order of ``agents``; never raises for an agent's failure."""
    deadline = clock() + budget
    return list(
        await asyncio.gather(
            *(
                _ask(
                    name,
                    agent,
                    context,
                    agent_timeout=agent_timeout,
                    deadline=deadline,
                    reserve=reserve,
                    attempts=attempts,
                    backoff=backoff,
                    clock=clock,
                )
                for name, agent in agents.items()
            )
        )
    )


async def _ask(
    name: str,
    agent: Agent,
    context: AgentContext,
    *,
    agent_timeout: float,
    deadline: float,
    reserve: float,
    attempts: int,
    backoff: float,
    clock: Callable[[], float],
) -> AgentAnswer:
    started = clock()
    tried = 0

    def report(outcome: CallOutcome, detail: str = "", count: int = 0) -> AgentReport:
        return AgentReport(name, outcome, clock() - started, tried, count, detail)

    while True:
        tried += 1
        allowed = min(agent_timeout, deadline - reserve - clock())
        if allowed <= 0:
            return AgentAnswer(report(CallOutcome.TIMED_OUT, "no time left in the cycle budget"))
        try:
            async with asyncio.timeout(allowed):
                if takes_timeout(agent):
                    recommendations = await agent.recommend(context, timeout=allowed)
                else:
                    recommendations = await agent.recommend(context)
            validate_recommendations(name, recommendations)
        except (TimeoutError, DeadlineExceeded):
            return AgentAnswer(report(CallOutcome.TIMED_OUT, f"no answer within {allowed:.3f} s"))
        except Unavailable as exc:
            pause = backoff * 2 ** (tried - 1)
            if tried >= attempts or clock() + pause >= deadline - reserve:
                return AgentAnswer(report(CallOutcome.UNAVAILABLE, exc.message))
            await asyncio.sleep(pause)
            continue
        except MeshError as exc:
            return AgentAnswer(report(CallOutcome.ERROR, f"{exc.code}: {exc.message}"))
        except Exception as exc:  # an in-process agent's bug must not break the cycle
            return AgentAnswer(report(CallOutcome.ERROR, f"{type(exc).__name__}: {exc}"))
        return AgentAnswer(
            report(CallOutcome.OK, count=len(recommendations)), tuple(recommendations)
        )
