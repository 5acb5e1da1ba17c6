-- The peers' schema and data: the same table, index and rows as Basalt's `bench`
-- collection (bench/seed.py). psql -v n=RECORDS -v owner=USER_ID -f schema.sql
CREATE TABLE users (id text PRIMARY KEY, email text UNIQUE NOT NULL);
CREATE TABLE bench (
  id text PRIMARY KEY,
  title text NOT NULL DEFAULT '',
  status text NOT NULL DEFAULT '',
  priority double precision NOT NULL DEFAULT 0,
  owner text NOT NULL REFERENCES users (id),
  created timestamptz NOT NULL DEFAULT now(),
  updated timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_bench_sp ON bench (status, priority);
CREATE TABLE rt_bench (id bigserial PRIMARY KEY, t bigint NOT NULL);
INSERT INTO users VALUES (:'owner', 'user@example.com');
INSERT INTO bench (id, title, status, priority, owner)
  SELECT lpad(to_hex(i), 15, '0'), 'task ' || i, (ARRAY['todo', 'doing', 'done'])[i % 3 + 1], i % 10, :'owner'
  FROM generate_series(0, :n - 1) AS i;
ANALYZE;
