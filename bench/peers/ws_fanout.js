// The Node + ws realtime peer: the subset of Basalt's WebSocket protocol that
// bench/rtload speaks (subscribe -> subscribed, events), and record creates that are
// written to PostgreSQL and then sent to every subscriber of the collection.
// Usage: node ws_fanout.js PORT
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');
const c = require('./common');

const verify = c.verifiers.jsonwebtoken;

const subscribers = new Map(); // topic -> Set of sockets
let nextId = 1;

function publish(collection, record) {
  const set = subscribers.get(`${collection}/*`);
  if (!set || set.size === 0) return;
  const msg = JSON.stringify({
    type: 'event', id: String(nextId++), topic: `${collection}/*`, data: { action: 'create', record },
  });
  for (const ws of set) ws.send(msg);
}

const server = http.createServer((req, res) => {
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (req.method === 'GET' && req.url === '/api/health') return reply(200, c.health);
  if (req.method !== 'POST' || req.url !== '/api/collections/bench/records')
    return reply(404, c.error(404, 'Not found.').body);
  if (!c.userOf(req.headers.authorization, verify)) return reply(401, c.error(401, 'The request requires a valid token.').body);
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d) => { body += d; });
  req.on('end', async () => {
    let t;
    try {
      t = JSON.parse(body).t;
    } catch {
      return reply(400, c.error(400, 'The body must be JSON.').body);
    }
    try {
      const r = await c.pool.query({ name: 'rt', text: 'INSERT INTO rt_bench (t) VALUES ($1) RETURNING id, t', values: [t] });
      const record = { collectionName: 'bench', id: String(r.rows[0].id), t: Number(r.rows[0].t) };
      reply(200, record);
      publish('bench', record);
    } catch (e) {
      reply(500, c.error(500, String(e.message)).body);
    }
  });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on('upgrade', (req, socket, head) => {
  if (req.url !== '/api/realtime/ws') return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => {
    const mine = new Set();
    ws.on('message', (data) => {
      let m;
      try {
        m = JSON.parse(data);
      } catch {
        return ws.close(1007, 'invalid JSON');
      }
      if (m.type !== 'subscribe' || !Array.isArray(m.topics)) return;
      for (const t of m.topics) {
        if (!subscribers.has(t)) subscribers.set(t, new Set());
        subscribers.get(t).add(ws);
        mine.add(t);
      }
      ws.send(JSON.stringify({ type: 'subscribed', requestId: m.requestId, topics: [...mine] }));
    });
    ws.on('close', () => { for (const t of mine) subscribers.get(t).delete(ws); });
  });
});

server.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('ws peer listening'));
