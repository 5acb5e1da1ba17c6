// The Fastify + pg peer (the fastest mainstream Node choice), tokens checked with
// fast-jwt as @fastify/jwt does. Usage: node fastify.js PORT
'use strict';
const fastify = require('fastify')({ logger: false });
const c = require('./common');

const verify = c.verifiers.fastjwt;

const send = (reply, r) => reply.code(r.status).send(r.body);

fastify.get('/api/health', async () => c.health);
fastify.get('/api/collections/bench/records/:id', async (req, reply) =>
  send(reply, await c.view(req.params.id, c.userOf(req.headers.authorization, verify))));
fastify.get('/api/collections/bench/records', async (req, reply) => send(reply, await c.list(req.query)));
fastify.post('/api/collections/bench/records', async (req, reply) =>
  send(reply, await c.create(req.body, c.userOf(req.headers.authorization, verify))));

fastify.listen({ port: Number(process.argv[2]), host: '127.0.0.1' }).then(() => console.log('fastify listening'));
