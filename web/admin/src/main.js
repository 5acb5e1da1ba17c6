// The dashboard shell: sign-in, the navigation built from the page registry, and the
// router that shows one page at a time.
import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { html, pb, useRoute, go, errorOf, ErrorBanner, Toasts } from "./lib.js";
import { pages } from "./pages/index.js";

function SignIn({ onDone }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [err, setErr] = useState(null);
  const [busy, setBusy] = useState(false);
  const emailRef = useRef(null);
  // The e-mail box takes the focus (the autofocus attribute is not applied to an
  // element that a script inserts after the page loaded).
  useEffect(() => { if (emailRef.current) emailRef.current.focus(); }, []);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setErr(null);
    try {
      await pb.collection("_superusers").authWithPassword(email, password);
      onDone();
    } catch (x) {
      setErr(errorOf(x));
    } finally {
      setBusy(false);
    }
  }
  return html`<main class="signin">
    <form onSubmit=${submit} aria-labelledby="signin-title">
      <h1 id="signin-title">Basalt</h1>
      <p class="muted">Sign in as a superuser.</p>
      <${ErrorBanner} err=${err} />
      <label>E-mail <input ref=${emailRef} type="email" name="email" autocomplete="username" required
        value=${email} onInput=${(e) => setEmail(e.target.value)} /></label>
      <label>Password <input type="password" name="password" autocomplete="current-password" required
        value=${password} onInput=${(e) => setPassword(e.target.value)} /></label>
      <button type="submit" class="primary" disabled=${busy}>Sign in</button>
      <p class="muted small">No superuser yet? Run <code>./build/basalt superuser upsert EMAIL PASSWORD</code>${" "}
        beside the server (the server's start-up message shows the full command).</p>
    </form>
  </main>`;
}

function Shell() {
  const route = useRoute();
  const [navOpen, setNavOpen] = useState(false);
  const match = pages.map((p) => ({ p, m: route.path.match(p.route) })).find((x) => x.m);
  useEffect(() => {
    setNavOpen(false);
    if (!match) go(pages[0].home);
  }, [route.path]);
  const Page = match && match.p.component;
  return html`<div class="shell">
    <header class="topbar">
      <button class="menu" aria-label="Menu" aria-expanded=${navOpen} onClick=${() => setNavOpen(!navOpen)}>☰</button>
      <span class="brand">Basalt</span>
      <span class="grow"></span>
      <span class="muted small who">${pb.authStore.record && pb.authStore.record.email}</span>
      <button onClick=${() => { pb.authStore.clear(); location.reload(); }}>Sign out</button>
    </header>
    <nav class=${navOpen ? "open" : ""} aria-label="Sections">
      ${pages.filter((p) => p.nav !== false).map((p) => html`<a href=${"#" + p.home}
        class=${match && match.p === p ? "active" : ""} aria-current=${match && match.p === p ? "page" : null}>
        ${p.title}</a>`)}
    </nav>
    <main class="content" id="content">
      ${Page ? html`<${Page} params=${match.m.slice(1)} query=${route.query} key=${match.p.id} />` : null}
    </main>
    <${Toasts} />
  </div>`;
}

function App() {
  const [signedIn, setSignedIn] = useState(pb.authStore.isValid && pb.authStore.isSuperuser);
  useEffect(() => {
    // A token the server no longer takes (expired, revoked): back to sign-in.
    if (!signedIn) return;
    pb.collection("_superusers").authRefresh().catch(() => { pb.authStore.clear(); setSignedIn(false); });
  }, []);
  return signedIn ? html`<${Shell} />` : html`<${SignIn} onDone=${() => setSignedIn(true)} />`;
}

render(html`<${App} />`, document.getElementById("app"));
