// Settings (GET/PATCH /api/settings): the application's meta (name, URL, sender) and
// SMTP. The stored SMTP password is never sent back by the server: its box stays
// empty and a value is sent only when one is typed. Field errors show under their box;
// "Send a test email" asks for an address and shows the SMTP server's answer.
import { useEffect, useState } from "preact/hooks";
import { html, pb, ErrorBanner, Modal, toast } from "../lib.js";

// PocketBase nests field errors ({smtp: {host: {message}}}); Basalt may name them
// with a dotted path ("smtp.host"). Both become { "smtp.host": message }.
function settingsError(e) {
  const r = (e && e.response) || {};
  const fields = {};
  const walk = (o, path) => {
    for (const [k, v] of Object.entries(o || {})) {
      const p = path ? path + "." + k : k;
      if (v && typeof v === "object" && typeof v.message === "string") fields[p] = v.message;
      else if (v && typeof v === "object") walk(v, p);
      else fields[p] = String(v);
    }
  };
  walk(r.data, "");
  return { message: r.message || (e && e.message) || "Something went wrong.", fields, status: e && e.status };
}

function Err({ err, name }) {
  const m = err && err.fields[name];
  return m ? html`<div class="field-error" role="alert" data-error-for=${name}>${m}</div>` : null;
}

function Text({ label, name, value, set, err, type = "text", ...rest }) {
  return html`<label>${label}
    <input type=${type} name=${name} value=${value ?? ""} aria-invalid=${!!(err && err.fields[name])}
      onInput=${(e) => set(type === "number" ? (e.target.value === "" ? 0 : Number(e.target.value)) : e.target.value)} ...${rest} />
    <${Err} err=${err} name=${name} /></label>`;
}

export function Settings() {
  const [meta, setMeta] = useState(null);
  const [smtp, setSmtp] = useState(null);
  const [password, setPassword] = useState("");
  const [err, setErr] = useState(null);
  const [busy, setBusy] = useState(false);
  const [testing, setTesting] = useState(false);
  const [testTo, setTestTo] = useState("");
  const [testErr, setTestErr] = useState(null);

  async function load() {
    try {
      const s = await pb.settings.getAll();
      setMeta({ appName: "", appURL: "", senderName: "", senderAddress: "", ...(s.meta || {}) });
      setSmtp({ enabled: false, host: "", port: 587, username: "", tls: false, authMethod: "PLAIN", ...(s.smtp || {}) });
      setPassword("");
    } catch (x) { setErr(settingsError(x)); }
  }
  useEffect(() => { load(); }, []);

  async function save(e) {
    e.preventDefault();
    setBusy(true); setErr(null);
    const m = { appName: meta.appName, appURL: meta.appURL, senderName: meta.senderName, senderAddress: meta.senderAddress };
    const s = { enabled: !!smtp.enabled, host: smtp.host, port: Number(smtp.port) || 0, username: smtp.username, tls: !!smtp.tls, authMethod: smtp.authMethod || "PLAIN" };
    // Only a typed password replaces the stored one.
    if (password !== "") s.password = password;
    try {
      await pb.settings.update({ meta: m, smtp: s });
      toast("Settings saved");
      await load();
    } catch (x) { setErr(settingsError(x)); } finally { setBusy(false); }
  }
  async function sendTest(e) {
    e.preventDefault();
    setTestErr(null);
    try {
      await pb.send("/api/settings/test/email", { method: "POST", body: { email: testTo.trim(), template: "verification" } });
      toast("Test email sent to " + testTo.trim());
      setTesting(false);
    } catch (x) { setTestErr(settingsError(x)); }
  }

  if (!meta) return html`<section><div class="page-head"><h1>Settings</h1></div><${ErrorBanner} err=${err} /><p class="muted">Loading…</p></section>`;
  const setM = (k) => (v) => setMeta((o) => ({ ...o, [k]: v }));
  const setS = (k) => (v) => setSmtp((o) => ({ ...o, [k]: v }));
  return html`<section>
    <div class="page-head"><h1>Settings</h1><span class="grow"></span>
      <button type="button" onClick=${() => { setTesting(true); setTestErr(null); }}>Send a test email</button></div>
    <${ErrorBanner} err=${err} />
    <form class="editor settings" onSubmit=${save}>
      <fieldset><legend>Application</legend>
        <div class="row">
          <${Text} label="Application name" name="meta.appName" value=${meta.appName} set=${setM("appName")} err=${err} />
          <${Text} label="Application URL (links in mails)" name="meta.appURL" value=${meta.appURL} set=${setM("appURL")} err=${err} placeholder="https://example.com" />
        </div>
        <div class="row">
          <${Text} label="Sender name" name="meta.senderName" value=${meta.senderName} set=${setM("senderName")} err=${err} />
          <${Text} label="Sender address" name="meta.senderAddress" value=${meta.senderAddress} set=${setM("senderAddress")} err=${err} placeholder="noreply@example.com" />
        </div>
      </fieldset>
      <fieldset><legend>Mail server (SMTP)</legend>
        <label class="inline"><input type="checkbox" name="smtp.enabled" checked=${!!smtp.enabled}
          onChange=${(e) => setS("enabled")(e.target.checked)} /> Send mail through this SMTP server</label>
        <${Err} err=${err} name="smtp.enabled" />
        <div class="row">
          <${Text} label="Host" name="smtp.host" value=${smtp.host} set=${setS("host")} err=${err} placeholder="smtp.example.com" />
          <${Text} label="Port" name="smtp.port" type="number" min="1" max="65535" value=${smtp.port} set=${setS("port")} err=${err} />
        </div>
        <div class="row">
          <${Text} label="Username" name="smtp.username" value=${smtp.username} set=${setS("username")} err=${err} autocomplete="off" />
          <${Text} label="Password" name="smtp.password" type="password" value=${password} set=${setPassword} err=${err}
            autocomplete="new-password" placeholder="unchanged (the stored one is never shown)" />
        </div>
        <div class="row">
          <label>Authentication
            <select name="smtp.authMethod" value=${smtp.authMethod || "PLAIN"} onChange=${(e) => setS("authMethod")(e.target.value)}>
              <option value="PLAIN">PLAIN</option><option value="LOGIN">LOGIN</option></select>
            <${Err} err=${err} name="smtp.authMethod" /></label>
          <label class="inline"><input type="checkbox" name="smtp.tls" checked=${!!smtp.tls}
            onChange=${(e) => setS("tls")(e.target.checked)} /> TLS from the start (smtps); off: STARTTLS when offered</label>
        </div>
      </fieldset>
      <div class="actions"><button type="button" onClick=${load}>Reset</button>
        <button type="submit" class="primary" disabled=${busy}>${busy ? "Saving…" : "Save settings"}</button></div>
    </form>
    ${testing && html`<${Modal} labelledBy="test-title" onClose=${() => setTesting(false)} onSubmit=${sendTest}>
        <h2 id="test-title">Send a test email</h2>
        <p class="muted small">One mail (the verification template) is sent now with the saved settings.</p>
        <${ErrorBanner} err=${testErr && !Object.keys(testErr.fields).length ? testErr : null} />
        <label>To <input type="email" name="test-email" required autofocus value=${testTo} onInput=${(e) => setTestTo(e.target.value)} />
          <${Err} err=${testErr} name="email" /></label>
        <div class="actions"><button type="button" onClick=${() => setTesting(false)}>Cancel</button>
          <button type="submit" class="primary">Send</button></div>
      </${Modal}>`}
  </section>`;
}
