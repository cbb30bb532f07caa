// A Node client of the federation, loaded from protos/ alone (docs/clients.md).
//
//   npm ci --prefix examples/node        # or: make examples/node/node_modules/.package-lock.json
//   qtmesh up                            # writes .qtmesh/mesh.json
//   node examples/node/client.mjs        # prints one JSON object
//
// It checks the federation's health; generates plans and follows the plan stream
// (SubscribePlans), disconnecting after some events and resuming with after_sequence set to
// the last event sequence seen, checking that every event arrives exactly once; and sends an
// invalid request, decoding the google.rpc.ErrorInfo of the INVALID_ARGUMENT it gets.
//
// Address: --address host:port, else $QTMESH_FEDERATION_ADDRESS, else the "federation" entry of
// --state-file (default .qtmesh/mesh.json, as `qtmesh up` writes it). A bearer token comes from
// --token or $QTMESH_TOKEN; TLS is used with --ca-file (the CA of the mesh's certificates).

import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FEDERATION = "qtmesh.api.federation.v1.FederationService";

const { values: args } = parseArgs({
  options: {
    address: { type: "string" },
    "state-file": { type: "string", default: ".qtmesh/mesh.json" },
    protos: { type: "string", default: path.resolve(HERE, "../../protos") },
    token: { type: "string" },
    "ca-file": { type: "string" },
    "before-disconnect": { type: "string", default: "2" },
    "deadline-seconds": { type: "string", default: "10" },
  },
});
const deadlineMs = Number(args["deadline-seconds"]) * 1000;
const beforeDisconnect = Number(args["before-disconnect"]);

function federationAddress() {
  if (args.address) return args.address;
  if (process.env.QTMESH_FEDERATION_ADDRESS) return process.env.QTMESH_FEDERATION_ADDRESS;
  // {service: {"address": "host:port", "metrics": "host:port", "pid": N, "log": "..."}}
  const state = JSON.parse(readFileSync(args["state-file"], "utf8"));
  if (!state.federation?.address) {
    throw new Error(`${args["state-file"]} names no federation address`);
  }
  return state.federation.address;
}

// keepCase: the fields keep their proto names (after_sequence); proto-loader's default
// camelCase would make {after_sequence: ...} an unknown key, silently dropped.
// longs: String: int64 sequences as decimal strings, exact beyond 2^53.
const loaded = protoLoader.loadSync(
  ["qtmesh/api/federation/v1/federation.proto", "grpc/health/v1/health.proto"],
  {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [args.protos],
  },
);
const api = grpc.loadPackageDefinition(loaded);

// google.rpc.Status and its details, to decode the grpc-status-details-bin trailer.
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => path.join(args.protos, target);
root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = root.lookupType("google.rpc.Status");
const ErrorInfo = root.lookupType("google.rpc.ErrorInfo");

function errorInfo(error) {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw) return null;
  const status = Status.decode(raw);
  for (const detail of status.details) {
    if (detail.type_url === "type.googleapis.com/google.rpc.ErrorInfo") {
      const info = ErrorInfo.decode(detail.value);
      return {
        code: status.code,
        message: status.message,
        reason: info.reason,
        domain: info.domain,
        metadata: { ...info.metadata },
      };
    }
  }
  return null;
}

const address = federationAddress();
const credentials = args["ca-file"]
  ? grpc.credentials.createSsl(readFileSync(args["ca-file"]))
  : grpc.credentials.createInsecure();
const federation = new api.qtmesh.api.federation.v1.FederationService(address, credentials);
const health = new api.grpc.health.v1.Health(address, credentials);

let requests = 0;
function metadata() {
  const m = new grpc.Metadata();
  m.set("x-request-id", `node-example-${process.pid}-${++requests}`);
  const token = args.token ?? process.env.QTMESH_TOKEN;
  if (token) m.set("authorization", `Bearer ${token}`);
  return m;
}
const deadline = () => ({ deadline: new Date(Date.now() + deadlineMs) });

function unary(client, method, request) {
  const m = metadata();
  return new Promise((resolve, reject) => {
    client[method](request, m, deadline(), (error, response) => {
      if (error) {
        error.requestId = m.get("x-request-id")[0];
        reject(error);
      } else resolve(response);
    });
  });
}

// Reads a SubscribePlans stream; `until(events)` says when to stop (then it is cancelled: the
// disconnect), checked on each event and on `recheck()`. `done` resolves with its events once
// stopped; `connected` when the server has accepted the request (it sends headers then).
function subscribe(request, until) {
  const m = metadata();
  const call = federation.SubscribePlans(request, m, deadline());
  const events = [];
  let onConnected;
  const connected = new Promise((resolve) => (onConnected = resolve));
  call.on("metadata", () => onConnected());
  let stopped = false;
  let stop;
  const done = new Promise((resolve, reject) => {
    stop = () => {
      if (stopped || !until(events)) return;
      stopped = true;
      call.cancel();
      resolve(events);
    };
    call.on("data", (event) => {
      if (stopped) return;
      events.push(event);
      stop();
    });
    call.on("error", (error) => {
      error.requestId = m.get("x-request-id")[0];
      if (!stopped) reject(error);
    });
    call.on("end", () => {
      if (!stopped) reject(new Error("the plan stream ended"));
    });
  });
  return { connected, done, recheck: () => stop() };
}

const generate = async (execute) => (await unary(federation, "GeneratePlan", { execute })).plan;
const plansIn = (events) => events.filter((e) => e.event === "plan").map((e) => e.plan.sequence);

async function main() {
  const checked = await unary(health, "Check", { service: FEDERATION });

  // Plans before anyone listens: the stream replays them from history (after_sequence 0 is
  // the start of history). The first plan is executed: its status updates are events too,
  // with event sequences of their own (their plan_sequence names the plan).
  const generated = [await generate(true), await generate(false), await generate(false)];
  const enough = (events) => events.length >= beforeDisconnect;
  const first = await subscribe({ after_sequence: "0" }, enough).done;
  const lastSeen = first.at(-1).sequence;

  // Plans while disconnected, then the resumed stream: after the last event sequence seen.
  generated.push(await generate(false), await generate(false));
  let live = null;
  // Until the live plan, and the executed plan's completion (its updates come as they happen).
  const completed = (e) =>
    e.event === "status_update" &&
    e.status_update.plan_sequence === generated[0].sequence &&
    e.status_update.status === "ACTION_STATUS_COMPLETED";
  const resumed = subscribe(
    { after_sequence: lastSeen },
    (events) =>
      live !== null &&
      plansIn(events).includes(live.sequence) &&
      [...first, ...events].some(completed),
  );
  await resumed.connected;
  live = await generate(false); // published while subscribed: delivered live
  generated.push(live);
  resumed.recheck(); // the live plan may have arrived before GeneratePlan's answer
  const second = await resumed.done;

  const all = [...first, ...second];
  const sequences = all.map((e) => BigInt(e.sequence));
  const increasing = sequences.every((s, i) => i === 0 || s > sequences[i - 1]);
  const unique = new Set(all.map((e) => e.sequence)).size === all.length;
  const planSequences = plansIn(all);
  const everyPlanOnce =
    planSequences.length === generated.length &&
    generated.every((p) => planSequences.filter((s) => s === p.sequence).length === 1);
  const contiguous = sequences.every((s, i) => i === 0 || s === sequences[i - 1] + 1n);

  // An invalid request: resuming after an event that does not exist yet.
  let invalid = null;
  try {
    const future = (BigInt(all.at(-1).sequence) + 1000000n).toString();
    await subscribe({ after_sequence: future }, () => true).done;
  } catch (error) {
    invalid = {
      code: grpc.status[error.code],
      request_id: error.requestId,
      details: error.details,
      error_info: errorInfo(error),
    };
  }

  return {
    address,
    health: checked.status,
    generated_plans: generated.map((p) => p.sequence),
    first_connection: first.map((e) => ({ sequence: e.sequence, event: e.event })),
    resumed_after_sequence: lastSeen,
    second_connection: second.map((e) => ({ sequence: e.sequence, event: e.event })),
    status_updates: all
      .filter((e) => e.event === "status_update")
      .map((e) => ({
        sequence: e.sequence,
        plan_sequence: e.status_update.plan_sequence,
        status: e.status_update.status,
      })),
    exactly_once: { increasing, unique, every_plan_once: everyPlanOnce, contiguous },
    invalid,
  };
}

main()
  .then((result) => {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    const ok = result.exactly_once.increasing && result.exactly_once.unique;
    process.exitCode = ok && result.exactly_once.every_plan_once ? 0 : 1;
  })
  .catch((error) => {
    process.stderr.write(`${error.stack ?? error}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    federation.close();
    health.close();
  });
