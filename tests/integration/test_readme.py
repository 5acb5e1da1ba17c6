"""Every shell and JavaScript snippet of README.md, run as a newcomer would run it, in
order, against a server of the test's own: the addresses, folders and database URLs
of the README are replaced by the test's (a free port, a temporary folder, a database
of the test's PostgreSQL). A snippet that no handler here knows fails the test, so a
new snippet comes with its check."""
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import BACKEND, BIN, NO_LIMITS, free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(ROOT, "README.md")


def blocks():
    """[(lang, text)] of the README's fenced blocks with a language."""
    text = open(README).read()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S)]


def commands(text):
    """A shell snippet's commands: continuation lines joined, comments dropped."""
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


class Env:
    """The test's stand-ins for what the README names."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = os.path.join(tmp, "basalt_data")
        self.procs = []

    def sub(self, cmd):
        cmd = cmd.replace("http://127.0.0.1:8090", self.url).replace("./basalt_data", self.data)
        cmd = cmd.replace("./build/basalt", BIN)
        return cmd

    def serve(self, cmd):
        """Starts `basalt serve ...` (the README's, or make run's) on the test's port."""
        args = cmd.split()[2:]
        log = open(os.path.join(self.tmp, f"serve{len(self.procs)}.log"), "w+b")
        p = subprocess.Popen([BIN, "serve", f"--http=127.0.0.1:{self.port}", *[a.strip("'") for a in args if a != "&" and not a.startswith("--http=")],
                              *NO_LIMITS], stdout=log, stderr=log, cwd=ROOT)
        self.procs.append((p, log))
        deadline = time.time() + 15
        while time.time() < deadline:
            assert p.poll() is None, open(log.name).read()
            try:
                if requests.get(self.url + "/api/health", timeout=0.5).status_code == 200:
                    return p, log
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("the README's server did not start")

    def stop_all(self):
        for p, log in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                assert p.wait(timeout=15) == 0
            log.close()
        self.procs = []

    def run(self, cmd, **kw):
        out = subprocess.run(self.sub(cmd), shell=True, cwd=kw.pop("cwd", ROOT), capture_output=True, text=True,
                             timeout=kw.pop("timeout", 120), **kw)
        assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
        return out.stdout + out.stderr


@pytest.fixture
def env():
    tmp = tempfile.mkdtemp(prefix="basalt-readme-")
    e = Env(tmp)
    yield e
    e.stop_all()
    shutil.rmtree(tmp, ignore_errors=True)


def pg_only():
    return pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL snippets run in integration-pg")


def find(pattern):
    got = [b for b in blocks() if re.search(pattern, b[1])]
    assert got, f"README has no snippet matching {pattern!r}"
    return got[0]


# Each README snippet has one handler here, found by a pattern of its text.
HANDLED = [
    r"^make run\s+# installs",
    r"^make run\n$",
    r"superuser upsert admin@example.com 'a-long-password' --dir=./basalt_data",
    r"^npm install pocketbase",
    r'import PocketBase from "pocketbase"',
    r"^make taskmanager",
    r"--db=postgres://basalt:pw@127.0.0.1:6432/basalt",
    r"^createdb basalt",
    # Snippets with placeholders for a real deployment, whose commands the suites run
    # as written with test values: several instances with --redis
    # (test_redis_multi.py), the local cluster's script (tests/cluster: up, status,
    # restart-instance, node-stop, down) and the SMTP settings (test_mail.py).
    r"--redis=redis://127.0.0.1:6379   # on every instance",
    r"^\$ deploy/local/cluster.sh up --instances 2",
    r"--smtp-enabled=1 --smtp-host=smtp.example.com",
]


def test_every_snippet_is_checked():
    for lang, text in blocks():
        if lang not in ("sh", "js", "bash", "shell", "javascript"):
            continue
        assert any(re.search(p, text, re.M) for p in HANDLED), f"README snippet not run by test_readme.py:\n{text}"


def test_the_two_commands_exist():
    lang, text = find(r"^make run\s+# installs")
    for cmd in commands(text):
        out = subprocess.run(["make", "-n", cmd.split()[1]], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_first_steps_in_order(env):
    # 1. make run: what it runs (the Makefile's run target), on the test's port.
    _, text = find(r"^make run\n$")
    assert commands(text) == ["make run"]
    recipe = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True).stdout
    serve_line = [l for l in recipe.splitlines() if "basalt serve" in l][0]
    assert "--dir=./basalt_data" in serve_line
    os.makedirs(env.data, exist_ok=True)
    p, log = env.serve(env.sub(serve_line.strip()))
    time.sleep(0.3)
    printed = open(log.name).read()
    assert f"Dashboard: {env.url}/_/" in printed, printed
    assert "No superuser yet" in printed and "superuser upsert EMAIL PASSWORD --dir=" in printed, printed
    # 2. The command it printed, as the README writes it, while the server runs.
    _, text = find(r"superuser upsert admin@example.com 'a-long-password' --dir=./basalt_data")
    for cmd in commands(text):
        env.run(cmd)
    r = requests.post(env.url + "/api/collections/_superusers/auth-with-password",
                      json={"identity": "admin@example.com", "password": "a-long-password"})
    assert r.status_code == 200, r.text
    # 3. The dashboard answers at the address printed (when built, as make build does).
    r = requests.get(env.url + "/_/")
    assert r.status_code == 200 and "Basalt" in r.text or "make web" in r.text
    # 4. npm install pocketbase in a folder of one's own, then first.mjs, twice.
    work = os.path.join(env.tmp, "try")
    os.makedirs(work)
    _, text = find(r"^npm install pocketbase")
    for cmd in commands(text):
        env.run(cmd + " --prefer-offline --no-audit --no-fund", cwd=work, timeout=300)
    _, js = find(r'import PocketBase from "pocketbase"')
    with open(os.path.join(work, "first.mjs"), "w") as f:
        f.write(env.sub(js))
    assert env.run("node first.mjs", cwd=work).strip().endswith("1 notes")
    assert env.run("node first.mjs", cwd=work).strip().endswith("2 notes")
    # 5. The task manager, on the same data, with the first server stopped as it says.
    env.stop_all()
    task_manager_snippet(env)


def test_task_manager_snippet_alone(env):
    os.makedirs(env.data)
    subprocess.run([BIN, "superuser", "upsert", "admin@example.com", "a-long-password", f"--dir={env.data}"],
                   check=True, capture_output=True)
    task_manager_snippet(env)


def task_manager_snippet(env):
    _, text = find(r"^make taskmanager")
    for cmd in commands(text):
        if cmd.startswith("./build/basalt serve"):
            env.serve(env.sub(cmd))
        elif cmd.startswith("sleep"):
            continue
        elif cmd.startswith("make "):
            # integration and integration-pg may run side by side: one npm ci at a time.
            with open(os.path.join(tempfile.gettempdir(), "basalt-readme-make.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                env.run(cmd, timeout=300)
        else:
            env.run(cmd, timeout=300)
    r = requests.get(env.url + "/")
    assert r.status_code == 200 and "<title>Tasks" in r.text
    assert requests.get(env.url + "/app.js").status_code == 200
    tok = requests.post(env.url + "/api/collections/_superusers/auth-with-password",
                        json={"identity": "admin@example.com", "password": "a-long-password"}).json()["token"]
    names = [c["name"] for c in requests.get(env.url + "/api/collections", headers={"Authorization": tok}).json()["items"]]
    assert "tasks" in names and "users" in names
    # The setup runs again without harm.
    env.run(next(c for c in commands(text) if "setup.mjs" in c))


def pg_db(name):
    direct = os.environ["BASALT_TEST_PG_URL"].rsplit("/", 1)[0]
    pooled = os.environ["BASALT_TEST_PGB_URL"].rsplit("/", 1)[0]
    db = f"bt_readme_{name}_{os.getpid()}"
    subprocess.run(["psql", os.environ["BASALT_TEST_PG_URL"], "-qAt", "-c", f"CREATE DATABASE {db}"], check=True,
                   capture_output=True)
    return f"{pooled}/{db}", f"{direct}/{db}"


@pg_only()
def test_postgresql_snippet(env):
    _, text = find(r"--db=postgres://basalt:pw@127.0.0.1:6432/basalt")
    pooled, direct = pg_db("run")
    for cmd in commands(text):
        cmd = cmd.replace("postgres://basalt:pw@127.0.0.1:6432/basalt", pooled)
        cmd = cmd.replace("postgres://basalt:pw@127.0.0.1:5432/basalt", direct)
        if cmd.startswith("./build/basalt serve"):
            env.serve(cmd)
        else:
            env.run(cmd)
    r = requests.post(env.url + "/api/collections/_superusers/auth-with-password",
                      json={"identity": "admin@example.com", "password": "a-long-password"})
    assert r.status_code == 200, r.text


@pg_only()
def test_db_copy_snippet(env):
    _, text = find(r"^createdb basalt")
    os.makedirs(env.data)
    subprocess.run([BIN, "superuser", "upsert", "admin@example.com", "a-long-password", f"--dir={env.data}"],
                   check=True, capture_output=True)
    _, direct = None, None
    for cmd in commands(text):
        if cmd.startswith("createdb"):
            _, direct = pg_db("copy")
            continue
        cmd = cmd.replace("postgres://basalt:PASSWORD@db.example:5432/basalt", direct)
        cmd = cmd.replace("postgres://...", direct).replace("./back_on_sqlite", os.path.join(env.tmp, "back"))
        if cmd.startswith("./build/basalt serve"):
            env.serve(cmd)
            env.stop_all()
        else:
            env.run(cmd)
    assert os.path.exists(os.path.join(env.tmp, "back", "data.db"))


def test_a_failing_npm_install_shows_its_cause(tmp_path):
    """Every npm install of the Makefile keeps npm's own error on the screen (no
    --silent, no --loglevel=silent): run as written in a folder whose lock file does
    not match its package.json (npm ci refuses it without the network), its cause must
    show, not only make's "Error 1"."""
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    installs = re.findall(r"npm (?:ci|install)\b[^'\n)&|;]*", makefile)
    assert installs, "the Makefile installs its npm packages"
    for cmd in installs:
        assert "--silent" not in cmd and "loglevel=silent" not in cmd and "--quiet" not in cmd, cmd
    with open(tmp_path / "package.json", "w") as f:
        json.dump({"name": "broken", "version": "1.0.0", "dependencies": {"pocketbase": "0.28.1"}}, f)
    with open(tmp_path / "package-lock.json", "w") as f:
        json.dump({"name": "broken", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
                   "packages": {"": {"name": "broken", "version": "1.0.0"}}}, f)
    for cmd in sorted(set(installs)):
        out = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode != 0, cmd
        assert "in sync" in out.stderr and "pocketbase" in out.stderr, (cmd, out.stderr)
