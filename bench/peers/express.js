// The Express + pg + jsonwebtoken peer (the stack of plan 004). Usage: node express.js PORT
'use strict';
const express = require('express');
const c = require('./common');

const verify = c.verifiers.jsonwebtoken;

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.use(express.json({ limit: '1mb' }));

const send = (res, r) => res.status(r.status).json(r.body);
const fail = (res, e) => send(res, c.error(500, String(e && e.message)));

app.get('/api/health', (req, res) => res.json(c.health));
app.get('/api/collections/bench/records/:id', (req, res) =>
  c.view(req.params.id, c.userOf(req.get('authorization'), verify)).then((r) => send(res, r), (e) => fail(res, e)));
app.get('/api/collections/bench/records', (req, res) =>
  c.list(req.query).then((r) => send(res, r), (e) => fail(res, e)));
app.post('/api/collections/bench/records', (req, res) =>
  c.create(req.body, c.userOf(req.get('authorization'), verify)).then((r) => send(res, r), (e) => fail(res, e)));

app.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('express listening'));
