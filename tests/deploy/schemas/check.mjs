// Checks documents against the pinned schemas of package.json here (README.md), for the deploy
// tests (tests/helpers/deploy_schemas.py):
//
//   node check.mjs PREFIX INPUT
//
// PREFIX is where `npm ci` installed package-lock.json (.tools/deploy-schemas); INPUT is a JSON
// file {"documents": [{"id": ..., "schema": "kubernetes" | "grafana-dashboard", "body": ...}]}.
// Prints {id: [problem, ...]} as JSON: no problems, an empty list.
//
// A Kubernetes object of the group monitoring.coreos.com is validated twice, both times against
// the prometheus-operator CRDs of @kubernetes-models/prometheus-operator: by the package's
// validator, the CRD's openAPIV3Schema compiled (types, required fields, enums, patterns such as
// durations), and by TypeScript against the package's types, generated from the same schema,
// which rejects every field the schema does not declare (as the API server's strict field
// validation does). A Grafana dashboard is checked by TypeScript against the Dashboard type of
// @grafana/schema.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [prefix, input] = process.argv.slice(2).map((path) => resolve(path));
const modules = join(prefix, "node_modules");
const ts = createRequire(join(prefix, "package.json"))("typescript");
const { documents } = JSON.parse(readFileSync(input, "utf8"));

const GROUP = "monitoring.coreos.com/";
const MODELS = join(modules, "@kubernetes-models", "prometheus-operator");
const DASHBOARD = join(modules, "@grafana", "schema", "dist", "types", "raw", "dashboard", "x");

// The module of a document's type (without extension), the type's name and, for a CRD kind,
// the class whose validate() runs the compiled schema; null when nothing describes it.
function schemaOf(document) {
  if (document.schema === "grafana-dashboard") {
    return { from: join(DASHBOARD, "types.gen"), type: "Dashboard", json: true };
  }
  const { apiVersion, kind } = document.body;
  if (typeof apiVersion !== "string" || !apiVersion.startsWith(GROUP)) {
    return null;
  }
  const version = apiVersion.slice(GROUP.length);
  if (!/^v\w+$/.test(version) || !/^[A-Z]\w*$/.test(kind)) {
    return null;
  }
  return { from: join(MODELS, GROUP, version, kind), type: `I${kind}`, model: kind };
}

async function model(schema) {
  try {
    return (await import(pathToFileURL(`${schema.from}.js`).href))[schema.model];
  } catch (error) {
    if (error.code === "ERR_MODULE_NOT_FOUND") {
      return undefined;
    }
    throw error;
  }
}

// Grafana's types declare string enums (ThresholdsMode, MappingType, ...), which a string does
// not satisfy in TypeScript although JSON holds nothing else: Json<T> is T with each enum
// replaced by the union of its values, and is T itself wherever T has no enum.
const JSON_TYPE = `
type Json<T> = 0 extends 1 & T ? T
  : T extends string ? \`\${T}\`
  : T extends number | boolean | null | undefined ? T
  : T extends ReadonlyArray<infer U> ? Array<Json<U>>
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;
`;

const problems = Object.fromEntries(documents.map((document) => [document.id, []]));
const directory = mkdtempSync(join(tmpdir(), "qtmesh-schemas-"));
const files = new Map();
try {
  for (const [n, document] of documents.entries()) {
    const schema = schemaOf(document);
    const Model = schema?.model === undefined ? undefined : await model(schema);
    if (schema === null || (schema.model !== undefined && Model === undefined)) {
      const { apiVersion, kind } = document.body;
      problems[document.id].push(`no schema for apiVersion ${apiVersion}, kind ${kind}`);
      continue;
    }
    if (Model !== undefined) {
      try {
        new Model(document.body).validate();
      } catch (error) {
        problems[document.id].push(String(error.message));
      }
    }
    // The document as an object literal of its type: TypeScript reports each property the type
    // does not have (at any depth), each wrong type and each missing required property.
    const file = join(directory, `document${n}.ts`);
    const type = schema.json ? `Json<${schema.type}>` : schema.type;
    writeFileSync(
      file,
      `import type { ${schema.type} } from ${JSON.stringify(schema.from)};\n${JSON_TYPE}` +
        `export const document: ${type} = ${JSON.stringify(document.body, null, 2)};\n`,
    );
    files.set(file, document.id);
  }
  const program = ts.createProgram([...files.keys()], {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
  });
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n");
    const id = diagnostic.file === undefined ? undefined : files.get(diagnostic.file.fileName);
    if (id === undefined) {
      throw new Error(`TypeScript, outside the documents: ${message}`);
    }
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    const source = diagnostic.file.text.split("\n")[line].trim();
    problems[id].push(`at ${source}: ${message}`);
  }
} finally {
  rmSync(directory, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(problems));
