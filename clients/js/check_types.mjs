// Keeps livechat.d.ts in step with the protocol's description, docs/asyncapi.yaml: each message
// of the asyncapi (`messageWithMeta`) and each schema (`userCount`) must have an interface or a
// type named after it (`MessageWithMeta`, or `ErrorFrame` where the plain name would shadow a
// global), holding every field its payload lists; `requestKind`'s values must all be in the
// `RequestKind` type; the connect URL's switches in `ConnectQuery`. Exits 1, naming each miss.
// Usage: node check_types.mjs [asyncapi.yaml] [livechat.d.ts]
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const here = dirname(fileURLToPath(import.meta.url));
const asyncapiPath = process.argv[2] ?? join(here, '../../docs/asyncapi.yaml');
const typesPath = process.argv[3] ?? join(here, 'livechat.d.ts');
const spec = parse(readFileSync(asyncapiPath, 'utf8'));
const types = readFileSync(typesPath, 'utf8');

const pascal = (name) => name[0].toUpperCase() + name.slice(1);

/** The body of `export interface NAME ... { ... }` (braces matched), or null. */
function interfaceBody(name) {
  const start = types.match(new RegExp(`export interface ${name}\\b[^{]*\\{`));
  if (!start) return null;
  let depth = 1;
  let at = start.index + start[0].length;
  const from = at;
  for (; at < types.length && depth > 0; at += 1) {
    if (types[at] === '{') depth += 1;
    else if (types[at] === '}') depth -= 1;
  }
  return types.slice(from, at - 1);
}

/** `export type NAME = ...;`, or null. */
function typeAlias(name) {
  return types.match(new RegExp(`export type ${name}\\s*=([^;]*);`))?.[1] ?? null;
}

const misses = [];

/** `schema` (an asyncapi object schema) against the interface named after `name`. */
function check(kind, name, schema) {
  const candidates = [pascal(name), `${pascal(name)}Frame`];
  const found = candidates.find((candidate) => interfaceBody(candidate) !== null || typeAlias(candidate) !== null);
  if (!found) {
    misses.push(`${kind} ${name}: no interface ${candidates.join(' or ')} in livechat.d.ts`);
    return;
  }
  const body = interfaceBody(found);
  if (body !== null) {
    for (const field of Object.keys(schema?.properties ?? {})) {
      if (!new RegExp(`(^|[\\s;{])'?${field}'?\\??:`).test(body)) {
        misses.push(`${kind} ${name}: field ${field} missing in ${found}`);
      }
    }
  }
  const alias = typeAlias(found);
  for (const value of schema?.enum ?? []) {
    if (alias === null || !alias.includes(`'${value}'`)) misses.push(`${kind} ${name}: value '${value}' missing in ${found}`);
  }
}

const messages = spec.components?.messages ?? {};
for (const [name, message] of Object.entries(messages)) check('message', name, message.payload);
for (const [name, schema] of Object.entries(spec.components?.schemas ?? {})) check('schema', name, schema);
const query = spec.channels?.room?.bindings?.ws?.query;
check('connect query', 'connectQuery', query);

if (Object.keys(messages).length === 0) misses.push('no messages found in the asyncapi document');
if (misses.length) {
  console.error(`livechat.d.ts is behind ${asyncapiPath}:\n  ${misses.join('\n  ')}`);
  process.exit(1);
}
console.log(`livechat.d.ts has the ${Object.keys(messages).length} messages and ${Object.keys(spec.components?.schemas ?? {}).length} schemas of the asyncapi document, with every field`);
