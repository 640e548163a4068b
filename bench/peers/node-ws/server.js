// The Node.js + ws peer for Tether's benchmarks (bench/run.sh, BENCHMARKS.md).
//
// Seed 002 recommends Node's `ws` library, so this is the server Tether is measured
// against. It implements exactly the subset of Tether's contract the scenarios use, the
// way a good Node engineer would write it for speed:
//   - HTTP:  GET /health, GET /api/<resource>/<id>, PUT /api/<resource>/<id> (upsert)
//   - /ws:   welcome, subscribe (resource or one record) -> snapshot, then PUT pushes
//            numbered by `msg`; get; create/update/upsert -> result; unsubscribe; ping
//   - /monorail/<channel>: init -> session, watch -> list then item pushes, get ->
//            item|remove, all/query -> list, stop
// Subscriptions are indexed by resource and by record, so a write touches only its
// subscribers. Each push body is serialized once per write and shared: the monorail
// frame is one Buffer for every watcher; on /ws only the per-connection `msg` and the
// subscription name are prepended. A connection whose send buffer passes 4 MiB is
// closed with 4008, like Tether's slow-consumer bound.
//
// Fairness note: everything lives in memory. Nothing is written to disk, while Tether
// commits every write to SQLite with an fsync before acknowledging or pushing it.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const HOST = arg('--host', '127.0.0.1');
const PORT = Number(arg('--port', '7072'));
const MAX_BUFFERED = 4 * 1024 * 1024;
const EPOCH = crypto.randomBytes(8).toString('hex');

/** resource -> Map<id, {version, data}> */
const store = new Map();
/** Last change position: one counter, like Tether's change log. */
let pos = 0;
/** resource -> Set<Sub> (whole-resource subscriptions and monorail watches) */
const byResource = new Map();
/** `${resource}\u0000${id}` -> Set<Sub> (one-record subscriptions) */
const byRecord = new Map();
let nextSession = 1;

function table(resource) {
  let t = store.get(resource);
  if (!t) {
    t = new Map();
    store.set(resource, t);
  }
  return t;
}

function recordJson(resource, id, rec) {
  return { resource, id, version: rec.version, data: rec.data };
}

/** A record as MonoRail items look (as Tether sends them): its fields, `id` beside them. */
function itemJson(id, rec) {
  return { id, ...rec.data };
}

function addTo(index, key, sub) {
  let set = index.get(key);
  if (!set) {
    set = new Set();
    index.set(key, set);
  }
  set.add(sub);
}

function removeFrom(index, key, sub) {
  const set = index.get(key);
  if (set && set.delete(sub) && set.size === 0) index.delete(key);
}

function indexKey(sub) {
  return sub.id === undefined ? [byResource, sub.resource] : [byRecord, `${sub.resource}\u0000${sub.id}`];
}

function subscribe(sub) {
  const [index, key] = indexKey(sub);
  addTo(index, key, sub);
  sub.conn.subs.add(sub);
}

function unsubscribe(sub) {
  const [index, key] = indexKey(sub);
  removeFrom(index, key, sub);
  sub.conn.subs.delete(sub);
}

/** Applies an upsert and fans it out. Returns the new record. */
function upsert(resource, id, data) {
  const t = table(resource);
  const prev = t.get(id);
  const rec = { version: prev ? prev.version + 1 : 1, data };
  t.set(id, rec);
  pos += 1;
  fanOut(resource, id, rec, pos);
  return { rec, created: !prev, pos };
}

function fanOut(resource, id, rec, at) {
  const subs = [byResource.get(resource), byRecord.get(`${resource}\u0000${id}`)];
  // Serialized lazily, at most once per dialect, and shared by every subscriber.
  let canonicalTail;
  let monorailFrame;
  for (const set of subs) {
    if (!set) continue;
    for (const sub of set) {
      const conn = sub.conn;
      if (conn.ws.bufferedAmount > MAX_BUFFERED) {
        conn.ws.close(4008, 'slow consumer: reconnect and resume');
        continue;
      }
      if (conn.monorail) {
        if (monorailFrame === undefined) {
          monorailFrame = Buffer.from(
            JSON.stringify({ handler: 'item', data: itemJson(id, rec) }),
          );
        }
        conn.ws.send(monorailFrame, { binary: false });
      } else {
        if (canonicalTail === undefined) {
          // `{"type":...}` without its opening brace; msg and sub go in front.
          canonicalTail = JSON.stringify({
            type: 'PUT', pos: at, resource, id, version: rec.version, data: rec.data,
          }).slice(1);
        }
        conn.msg += 1;
        conn.ws.send(`{"msg":${conn.msg},"sub":${sub.nameJson},${canonicalTail}`);
      }
    }
  }
}

// ---- canonical /ws ----------------------------------------------------------------

function send(conn, obj) {
  conn.msg += 1;
  obj.msg = conn.msg;
  conn.ws.send(JSON.stringify(obj));
}

function fail(conn, req, code, message) {
  const e = { type: 'error', code, message };
  if (req !== undefined) e.req = req;
  send(conn, e);
}

function onCanonical(conn, text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return fail(conn, undefined, 'bad_json', 'the frame is not valid JSON');
  }
  if (m === null || typeof m !== 'object') return fail(conn, undefined, 'bad_request', 'not an object');
  const req = m.req;
  switch (m.type) {
    case 'subscribe': {
      if (typeof m.resource !== 'string') return fail(conn, req, 'bad_request', 'resource missing');
      const name = typeof m.sub === 'string' ? m.sub : `s${++conn.autoSub}`;
      const id = m.id === undefined ? undefined : String(m.id);
      const sub = { conn, name, nameJson: JSON.stringify(name), resource: m.resource, id };
      subscribe(sub);
      const t = store.get(m.resource);
      let records = [];
      if (t) {
        if (id === undefined) {
          records = [...t.keys()].sort().map((k) => recordJson(m.resource, k, t.get(k)));
        } else if (t.has(id)) {
          records = [recordJson(m.resource, id, t.get(id))];
        }
      }
      return send(conn, { type: 'snapshot', req, sub: name, epoch: EPOCH, pos, records });
    }
    case 'unsubscribe': {
      for (const sub of conn.subs) {
        if (sub.name === m.sub) {
          unsubscribe(sub);
          return send(conn, { type: 'result', req, subs: [sub.name] });
        }
      }
      return fail(conn, req, 'unknown_subscription', `no subscription ${JSON.stringify(m.sub)}`);
    }
    case 'get': {
      const rec = store.get(m.resource)?.get(String(m.id));
      return send(conn, { type: 'result', req, record: rec ? recordJson(m.resource, String(m.id), rec) : null });
    }
    case 'create':
    case 'update':
    case 'upsert': {
      if (typeof m.resource !== 'string' || m.id === undefined) {
        return fail(conn, req, 'bad_request', 'resource and id are required');
      }
      if (m.data === null || typeof m.data !== 'object' || Array.isArray(m.data)) {
        return fail(conn, req, 'bad_request', 'data must be an object');
      }
      const id = String(m.id);
      const exists = store.get(m.resource)?.has(id);
      if (m.type === 'create' && exists) return fail(conn, req, 'already_exists', `${m.resource}/${id} exists`);
      if (m.type === 'update' && !exists) return fail(conn, req, 'not_found', `${m.resource}/${id} not found`);
      const { rec, pos: at } = upsert(m.resource, id, m.data);
      return send(conn, {
        type: 'result', req, resource: m.resource, id, version: rec.version, pos: at,
        record: recordJson(m.resource, id, rec),
      });
    }
    case 'ping':
      return send(conn, { type: 'result', req });
    default:
      return fail(conn, req, 'unknown_type', `unknown message type ${JSON.stringify(m.type)}`);
  }
}

// ---- /monorail/<channel> ------------------------------------------------------------

function onMonorail(conn, text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return conn.ws.send(JSON.stringify({ handler: 'error', error: 'the frame is not valid JSON' }));
  }
  const channel = conn.channel;
  const params = (m && m.params) || {};
  const id = params.id === undefined ? undefined : String(params.id);
  const list = () => {
    const t = store.get(channel);
    const items = [];
    if (t) {
      for (const k of [...t.keys()].sort()) {
        if (id === undefined || id === k) items.push(itemJson(k, t.get(k)));
      }
    }
    conn.ws.send(JSON.stringify({ handler: 'list', items, params }));
  };
  switch (m && m.handler) {
    case 'init':
      return conn.ws.send(JSON.stringify({ handler: 'session', id: conn.session }));
    case 'watch':
      subscribe({ conn, name: 'watch', resource: channel, id });
      return list();
    case 'stop':
      for (const sub of [...conn.subs]) if (sub.id === id) unsubscribe(sub);
      return undefined;
    case 'all':
    case 'query':
      return list();
    case 'get': {
      const rec = id === undefined ? undefined : store.get(channel)?.get(id);
      return conn.ws.send(JSON.stringify(
        rec ? { handler: 'item', data: itemJson(id, rec) } : { handler: 'remove', params: { id } },
      ));
    }
    default:
      return conn.ws.send(JSON.stringify({ handler: 'error', error: `unknown handler ${JSON.stringify(m && m.handler)}` }));
  }
}

// ---- HTTP and upgrade ----------------------------------------------------------------

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const API = /^\/api\/([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})\/([A-Za-z0-9_.:@~-]{1,128})$/;

const server = http.createServer((req, res) => {
  if (req.url === '/health') return reply(res, 200, { status: 'ok', pos });
  const match = API.exec(req.url);
  if (!match) return reply(res, 404, { error: { code: 'not_found', message: 'no such route' } });
  const [, resource, id] = match;
  if (req.method === 'GET') {
    const rec = store.get(resource)?.get(id);
    return rec
      ? reply(res, 200, recordJson(resource, id, rec))
      : reply(res, 404, { error: { code: 'not_found', message: `${resource}/${id} not found` } });
  }
  if (req.method !== 'PUT') return reply(res, 405, { error: { code: 'bad_request', message: 'method' } });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let data;
    try {
      data = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return reply(res, 400, { error: { code: 'bad_json', message: 'the body is not valid JSON' } });
    }
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      return reply(res, 400, { error: { code: 'bad_request', message: 'the body must be an object' } });
    }
    const { rec, created } = upsert(resource, id, data);
    return reply(res, created ? 201 : 200, recordJson(resource, id, rec));
  });
  return undefined;
});

const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024, clientTracking: false });

server.on('upgrade', (req, socket, head) => {
  const path = req.url.split('?')[0];
  let channel;
  if (path.startsWith('/monorail/')) {
    channel = decodeURIComponent(path.slice('/monorail/'.length));
  } else if (path !== '/ws') {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const conn = {
      ws, msg: 0, autoSub: 0, subs: new Set(), channel, monorail: channel !== undefined,
      session: `c-${nextSession++}`,
    };
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? '' : data.toString();
      if (conn.monorail) onMonorail(conn, text);
      else onCanonical(conn, text);
    });
    ws.on('close', () => {
      for (const sub of [...conn.subs]) unsubscribe(sub);
    });
    ws.on('error', () => {});
    if (!conn.monorail) {
      send(conn, { type: 'welcome', session: conn.session, epoch: EPOCH, pos, protocol: 1 });
    }
  });
});

server.listen(PORT, HOST, () => {
  process.stdout.write(`node-ws peer listening on http://${HOST}:${PORT}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
