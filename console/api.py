"""The console's HTTP/JSON API and web pages, over the services' own async clients.

Rules:

* every route reads through a service's client; the console keeps no state of its own, so any
  replica answers any request and a restart loses nothing;
* live data comes as server-sent events relayed from the gRPC streams. Each event's ``id`` is
  its sequence in the stream it came from; a page that reconnects (the browser's EventSource
  sends ``Last-Event-ID`` by itself) resumes after it, so it misses nothing and sees nothing
  twice, across a console restart too;
* the API is read-only unless ``operator_token`` is set; actions (run a cycle, generate a plan)
  need it as ``Authorization: Bearer <token>``;
* when the mesh's servers require tokens (``auth_tokens``), so does every read of the API but
  its health: a token of those, as ``Authorization: Bearer <token>`` or in the
  ``qtmesh_token`` cookie (a browser's EventSource sends cookies, not headers);
* what the browser sends is validated here (types and ranges by the route's signature) and
  again by the service; a service's error keeps its code: INVALID_ARGUMENT is 400 naming the
  field, NOT_FOUND 404, UNAVAILABLE 503.
"""

from __future__ import annotations

import collections
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from google.protobuf.json_format import MessageToDict
from sse_starlette.sse import EventSourceResponse

from agents.risk.client import RiskClient
from console._json import jsonable
from console.config import ConsoleConfig
from federation.client import FederationClient
from federation.plan import Plan
from market.client import MarketClient
from meta_optimizer.client import MetaOptimizerClient
from meta_optimizer.ledger import ProposalState
from qtmesh.base.errors import InvalidArgument, MeshError
from sesa.client import SesaClient

# HTTP status of each gRPC code a service may answer with.
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNIMPLEMENTED": 501,
}
PAGES = {
    "/": "index.html",
    "/mission-control": "mission-control.html",
    "/governance": "governance.html",
    "/singularity": "singularity.html",
    "/evolution": "evolution.html",
    "/risk": "risk.html",
    "/fleet": "fleet.html",
}
# A proposal state by name, as every response spells it.
_STATES = f"^({'|'.join(s.name for s in ProposalState)})$"
# Seconds between keep-alive comments on an idle event stream (proxies drop silent ones).
_PING_SECONDS = 15
# The cookie a browser keeps the mesh token in (pages ask for it on a 401).
TOKEN_COOKIE = "qtmesh_token"


def create_api(
    *,
    config: ConsoleConfig,
    read_tokens: Collection[str] = (),
    federation: FederationClient,
    meta_optimizer: MetaOptimizerClient,
    sesa: SesaClient,
    risk: RiskClient,
    market: MarketClient,
) -> FastAPI:
    api = FastAPI(
        title="Quantum Trader Mesh console",
        summary="The mesh's plans, proposals and ledger, live.",
        version="1",
        docs_url="/api/docs",
        redoc_url=None,
    )

    @api.middleware("http")
    async def reader(request: Request, call_next: Callable[[Request], Awaitable[Response]]):
        path = request.url.path
        if read_tokens and path.startswith("/api/") and path != "/api/health":
            scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
            # The cookie counts beside the header: an operator's action carries the operator
            # token in the header and the mesh token in the cookie.
            offered = [bearer] if scheme.lower() == "bearer" else []
            offered.append(request.cookies.get(TOKEN_COOKIE, ""))
            # Every token compared, in constant time each: nothing tells which one came close.
            known = [
                hmac.compare_digest(o.encode(), t.encode()) for o in offered for t in read_tokens
            ]
            if not any(known):
                return JSONResponse(
                    {
                        "code": "UNAUTHENTICATED",
                        "message": f"the mesh requires a token: Authorization: Bearer <token> "
                        f"or the {TOKEN_COOKIE} cookie",
                    },
                    status_code=401,
                )
        return await call_next(request)

    @api.exception_handler(MeshError)
    async def mesh_error(_request: Request, exc: MeshError) -> JSONResponse:
        body: dict[str, Any] = {"code": exc.code, "reason": exc.reason, "message": exc.message}
        if isinstance(exc, InvalidArgument):
            body["field"] = exc.field
        return JSONResponse(body, status_code=_HTTP_STATUS.get(exc.code, 500))

    def operator(authorization: Annotated[str | None, Header()] = None) -> None:
        if not config.operator_token:
            raise HTTPException(403, "the console is read-only: no operator_token is set")
        scheme, _, token = (authorization or "").partition(" ")
        # compare_digest: the time taken says nothing about how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.encode(), config.operator_token.reveal().encode()
        ):
            raise HTTPException(401, "an action needs Authorization: Bearer <operator token>")

    @api.get("/api/health", tags=["console"])
    async def health() -> dict[str, Any]:
        """Whether the console answers, and whether actions are enabled."""
        return {"status": "SERVING", "actions": bool(config.operator_token)}

    @api.get("/api/session", tags=["console"])
    async def session() -> dict[str, Any]:
        """Answers once a read is authorised (always, when the mesh requires no token): what a
        page asks before it opens its event streams."""
        return {"authorised": True, "token_required": bool(read_tokens)}

    # -- the Global Action Plan ----------------------------------------------------------------

    @api.get("/api/plans", tags=["plans"])
    async def recent_plans(
        limit: Annotated[int, Query(ge=1, le=1000)] = config.recent_plans,
    ) -> dict[str, Any]:
        """The latest ``limit`` plans, newest first, with their actions' current status, and
        the event sequence to follow ``/api/plans/events`` from (``resume_after``)."""
        latest: collections.deque[Plan] = collections.deque(maxlen=limit)
        async for plan in federation.list_plans():
            latest.append(plan)
        plans = list(reversed(latest))
        return {
            "plans": [jsonable(p) for p in plans],
            "resume_after": plans[0].sequence if plans else 0,
        }

    @api.get("/api/plans/events", tags=["plans"])
    async def plan_events(
        after: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        """Server-sent events: ``plan`` (a new plan) and ``status`` (an action's status moved),
        each with its event sequence as ``id``; after ``after`` (0: from the first; unset: live
        only), or after ``Last-Event-ID`` when the browser reconnects."""
        resume = _resume_point(last_event_id, after)

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for sequence, event in federation.subscribe(after_sequence=resume):
                kind = "plan" if isinstance(event, Plan) else "status"
                yield {"id": str(sequence), "event": kind, "data": _dumps(jsonable(event))}

        return _stream(events)

    @api.get("/api/plans/{sequence}", tags=["plans"])
    async def plan(sequence: int) -> dict[str, Any]:
        return jsonable(await federation.get_plan(sequence))

    @api.post("/api/plans", tags=["actions"], dependencies=[Depends(operator)])
    async def generate_plan(execute: bool = False) -> dict[str, Any]:
        """Runs a GAP cycle now (the operator token needed); ``execute`` carries its actions
        out through their owners."""
        return jsonable(await federation.generate_plan(execute=execute))

    # -- the meta optimizer: pulse, proposals, ledger ------------------------------------------

    @api.get("/api/pulse", tags=["meta-optimizer"])
    async def pulse() -> dict[str, Any]:
        """The optimization cycle pulse: the last cycle (with its rationale figures), counts."""
        return jsonable(await meta_optimizer.pulse())

    @api.get("/api/proposals", tags=["meta-optimizer"])
    async def proposals(
        state: Annotated[str | None, Query(pattern=_STATES)] = None,
        sector: Annotated[str, Query(max_length=64)] = "",
        page_size: Annotated[int, Query(ge=1, le=1000)] = config.page_size,
        page_token: Annotated[str, Query(max_length=256)] = "",
    ) -> dict[str, Any]:
        """One page of the proposal ledger, oldest first (``state=PROPOSED``: the active ones);
        ``next_page_token`` is empty on the last page."""
        page, token = await meta_optimizer.proposals_page(
            state=ProposalState[state] if state else None,
            sector=sector,
            page_size=page_size,
            page_token=page_token,
        )
        return {"proposals": [jsonable(p) for p in page], "next_page_token": token}

    @api.get("/api/ledger/verification", tags=["meta-optimizer"])
    async def verification() -> dict[str, Any]:
        """The hash chain checked end to end; ``first_bad_index`` names the first entry that
        does not verify (-1 when intact)."""
        return jsonable(await meta_optimizer.verify())

    @api.get("/api/ledger/events", tags=["meta-optimizer"])
    async def ledger_events(
        after: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        """Server-sent events of the ledger: ``proposal``, ``cycle`` and ``transition`` (a
        proposal's lifecycle moved), each with its ledger event sequence as ``id``."""
        resume = _resume_point(last_event_id, after)

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for event in meta_optimizer.watch(after_sequence=resume):
                yield {
                    "id": str(event.sequence),
                    "event": event.kind.name.lower(),
                    "data": _dumps(jsonable(event)),
                }

        return _stream(events)

    @api.post("/api/cycles", tags=["actions"], dependencies=[Depends(operator)])
    async def run_cycle(
        start_date: Annotated[str, Query(max_length=10)] = "",
        end_date: Annotated[str, Query(max_length=10)] = "",
    ) -> dict[str, Any]:
        """Runs an optimization cycle now (the operator token needed)."""
        return jsonable(await meta_optimizer.run_cycle(start_date=start_date, end_date=end_date))

    # -- SESA's evolutions and the risk officer -------------------------------------------------

    @api.get("/api/evolutions/events", tags=["sesa"])
    async def evolution_events(
        after: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        """Server-sent events of every evolution SESA runs: ``started``, ``generation`` (best,
        median and worst composite score, the top genomes) and ``ended`` (the candidates with
        their deflated Sharpe ratios, what the shadow book did), each with SESA's event
        sequence as ``id``. The data is the proto's JSON mapping: int64 values are strings."""
        resume = _resume_point(last_event_id, after)

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for event in sesa.watch_evolutions(after_sequence=resume):
                yield {
                    "id": str(event.sequence),
                    "event": event.WhichOneof("event") or "unknown",
                    "data": _dumps(MessageToDict(event, preserving_proto_field_name=True)),
                }

        return _stream(events)

    @api.get("/api/risk", tags=["risk"])
    async def risk_report() -> dict[str, Any]:
        """The fleet's risk report: VaR and CVaR (portfolio and per sector) against the limits,
        the breaches and the halts (the kill switch)."""
        report = await risk.assess()
        return {**jsonable(report), "trading_halted": report.trading_halted}

    # -- the paper fleet ------------------------------------------------------------------------

    @api.get("/api/fleet", tags=["fleet"])
    async def fleet(
        sector: Annotated[str, Query(max_length=64)] = "",
        curve_points: Annotated[int, Query(ge=0, le=10_000)] = 0,
    ) -> dict[str, Any]:
        """The paper fleet from its deployment to the clock: equity (with ``curve_points``
        samples of its curve beside an equal-weight buy and hold), ROI and benchmark per
        sector, the strategy book, arb-missions with their P&L, every change made to it (the
        allocations after each) and the halted scopes."""
        return jsonable(await market.fleet(sector=sector, curve_points=curve_points))

    @api.get("/api/trades/events", tags=["fleet"])
    async def trade_events(
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        """Server-sent events ``trades``: the fleet's closed trades in the order they closed,
        from the first, then live as the clock moves. Each event's ``id`` is the cursor of its
        last trade, ``<exit time>/<strategy id>``, which a reconnecting page resumes after."""
        after = _trade_cursor(last_event_id)

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for batch in market.watch_trades(after=after):
                if batch.trades and batch.cursor is not None:
                    exit_time, strategy_id = batch.cursor
                    yield {
                        "id": f"{exit_time}/{strategy_id}",
                        "event": "trades",
                        "data": _dumps([jsonable(t) for t in batch.trades]),
                    }

        return _stream(events)

    # -- pages -----------------------------------------------------------------------------

    static = resources.files("console") / "static"
    for path, name in PAGES.items():
        api.add_api_route(path, _page(static.joinpath(name).read_text()), include_in_schema=False)
    api.mount("/static", StaticFiles(packages=[("console", "static")]), name="static")
    return api


def _page(text: str) -> Callable[[], Any]:
    async def page() -> HTMLResponse:
        return HTMLResponse(text)

    return page


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    """Where a stream resumes: after the browser's Last-Event-ID when it reconnects, else after
    the query's ``after``."""
    if last_event_id:
        if not last_event_id.isdigit():
            raise InvalidArgument("Last-Event-ID", f"{last_event_id!r} is not an event sequence")
        return int(last_event_id)
    return after


def _trade_cursor(last_event_id: str | None) -> tuple[int, str] | None:
    """The trades stream's resume point from a Last-Event-ID ``<exit time>/<strategy id>``."""
    if not last_event_id:
        return None
    exit_time, _, strategy_id = last_event_id.partition("/")
    if not exit_time.isdigit() or not strategy_id:
        raise InvalidArgument(
            "Last-Event-ID", f"{last_event_id!r} is not a trade cursor <exit time>/<strategy id>"
        )
    return int(exit_time), strategy_id


def _stream(events: Callable[[], AsyncIterator[dict[str, Any]]]) -> EventSourceResponse:
    # EventSourceResponse ends the generator (and so the gRPC stream) when the browser leaves.
    return EventSourceResponse(events(), ping=_PING_SECONDS)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
