// What the Node peers share: the PostgreSQL pool, token checks, record shapes and
// the queries, so that Express and Fastify differ only in their framework.
// Environment: PGHOST, PGPORT, PGUSER, PGDATABASE (libpq's own), BENCH_JWT_SECRET.
'use strict';
const crypto = require('crypto');
const jwt = require('jsonwebtoken');
const { createVerifier } = require('fast-jwt');
const { Pool } = require('pg');

const pool = new Pool({ max: Number(process.env.BENCH_PG_POOL || 16) });
const secret = process.env.BENCH_JWT_SECRET;
if (!secret) throw new Error('BENCH_JWT_SECRET is required');

const COLUMNS = 'id, title, status, priority, owner, created, updated';
const STATUSES = new Set(['todo', 'doing', 'done']);

// Token verifiers: jsonwebtoken (Express's usual companion, plan 004's stack) and
// fast-jwt (what @fastify/jwt uses). Both check the HS256 signature and expiry.
const verifiers = {
  jsonwebtoken: (token) => jwt.verify(token, secret, { algorithms: ['HS256'] }),
  fastjwt: createVerifier({ key: secret, algorithms: ['HS256'] }),
};

// The user id of a valid token in the Authorization header, or null.
function userOf(header, verify) {
  if (!header) return null;
  const token = header.startsWith('Bearer ') ? header.slice(7) : header;
  try {
    return verify(token).sub || null;
  } catch {
    return null;
  }
}

function record(row) {
  return {
    collectionId: 'pbc_bench',
    collectionName: 'bench',
    id: row.id,
    title: row.title,
    status: row.status,
    priority: row.priority,
    owner: row.owner,
    created: row.created.toISOString().replace('T', ' '),
    updated: row.updated.toISOString().replace('T', ' '),
  };
}

function error(status, message) {
  return { status, body: { code: status, message, data: {} } };
}

async function view(id, user) {
  if (!user) return error(401, 'The request requires a valid token.');
  const r = await pool.query({
    name: 'view',
    text: `SELECT ${COLUMNS} FROM bench WHERE id = $1 AND owner = $2`,
    values: [id, user],
  });
  if (r.rows.length === 0) return error(404, 'The requested resource wasn\'t found.');
  return { status: 200, body: record(r.rows[0]) };
}

// GET ?status=&minPriority=&perPage=&page=&skipTotal=1, sorted by priority descending.
async function list(q) {
  const perPage = Math.min(Math.max(parseInt(q.perPage || '30', 10) || 30, 1), 500);
  const page = Math.max(parseInt(q.page || '1', 10) || 1, 1);
  const status = String(q.status || '');
  const min = Number(q.minPriority || 0);
  if (!STATUSES.has(status) || !Number.isFinite(min)) return error(400, 'Invalid status or minPriority.');
  const where = [status, min];
  const [items, count] = await Promise.all([
    pool.query({
      name: 'list',
      text: `SELECT ${COLUMNS} FROM bench WHERE status = $1 AND priority >= $2 ORDER BY priority DESC LIMIT $3 OFFSET $4`,
      values: [...where, perPage, (page - 1) * perPage],
    }),
    q.skipTotal === '1' ? null : pool.query({
      name: 'count',
      text: 'SELECT count(*)::int AS n FROM bench WHERE status = $1 AND priority >= $2',
      values: where,
    }),
  ]);
  const total = count ? count.rows[0].n : -1;
  const rows = items.rows;
  return {
    status: 200,
    body: {
      page, perPage, totalItems: total,
      totalPages: total < 0 ? -1 : Math.ceil(total / perPage),
      items: rows.map(record),
    },
  };
}

async function create(body, user) {
  if (!user) return error(401, 'The request requires a valid token.');
  if (!body || typeof body !== 'object') return error(400, 'The body must be a JSON object.');
  const title = body.title ?? '';
  const status = body.status ?? '';
  const priority = body.priority ?? 0;
  if (typeof title !== 'string' || !STATUSES.has(status) || typeof priority !== 'number')
    return error(400, 'Failed to create record.');
  const r = await pool.query({
    name: 'create',
    text: `INSERT INTO bench (id, title, status, priority, owner) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
    values: [newId(), title, status, priority, user],
  });
  return { status: 200, body: record(r.rows[0]) };
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
function newId() {
  const b = crypto.randomBytes(15);
  let s = '';
  for (const x of b) s += ALPHABET[x % 36];
  return s;
}

const health = { code: 200, message: 'API is healthy.', data: {} };

module.exports = { pool, verifiers, userOf, view, list, create, health, error };
