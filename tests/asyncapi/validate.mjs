// Parse an AsyncAPI document with the AsyncAPI project's own parser (@asyncapi/parser) and
// fail on any diagnostic of error severity. Usage: node validate.mjs DOCUMENT.json
// Prints every diagnostic as one JSON line; exits 1 when the document is not valid.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
const text = await readFile(path, "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
let errors = 0;
for (const d of diagnostics) {
  const severity = d.severity === DiagnosticSeverity.Error ? "error" : "warning";
  if (severity === "error") errors += 1;
  console.log(JSON.stringify({ severity, code: d.code, message: d.message, path: d.path }));
}
if (document === undefined || errors > 0) {
  console.log(JSON.stringify({ result: "invalid", errors }));
  process.exit(1);
}
const doc = document;
console.log(JSON.stringify({
  result: "valid",
  version: doc.version(),
  channels: doc.channels().length,
  operations: doc.operations().length,
  messages: doc.components().messages().length,
}));
