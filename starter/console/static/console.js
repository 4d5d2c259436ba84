// The Kepler console's only script: live updates (server-sent events) and passkeys
// (WebAuthn). Every page reads without it; signing needs it.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function say(text, ok) {
  const el = document.getElementById("result");
  el.textContent = text;
  el.className = "result " + (ok ? "ok" : "problem");
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function getAssertion(options) {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
  const credential = await navigator.credentials.get({publicKey});
  return credential.toJSON();
}

// Sign the statement the console prepares for `body.action`, then send it.
async function signAndSend(body) {
  const prepared = await post("/actions/prepare", body);
  const credential = await getAssertion(prepared.options);
  return post("/actions/submit", {token: prepared.token, credential});
}

async function signIn(button) {
  const {token, options} = await post("/login/options", {});
  const credential = await getAssertion(options);
  const done = await post("/login", {token, credential, next: button.dataset.next});
  window.location.assign(done.next);
}

async function enroll(button) {
  const link = button.dataset.link;
  const {options} = await post("/enroll/options", {link});
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
  const credential = await navigator.credentials.create({publicKey});
  const done = await post("/enroll", {link, credential: credential.toJSON()});
  say("Passkey enrolled for " + done.person + ". Sign in with it.", true);
  button.disabled = true;
}

function formSpec(form) {
  const data = new FormData(form);
  const list = (name) => (data.get(name) || "").split(/[\s,]+/).filter(Boolean);
  const spec = {name: data.get("name"), team: data.get("team"), template: data.get("template"),
                owners: list("owners"), replicas: Number(data.get("replicas") || 0), environments: {}};
  for (const env of data.getAll("environments")) spec.environments[env] = {};
  return spec;
}

async function run(what, element) {
  element.disabled = true;
  try {
    await what();
  } catch (error) {
    say(error.message || String(error), false);
  } finally {
    element.disabled = false;
  }
}

document.addEventListener("click", (event) => {
  const target = event.target.closest("button");
  if (!target) return;
  if (target.id === "signin") return run(() => signIn(target), target);
  if (target.id === "enroll") return run(() => enroll(target), target);
  if (target.hasAttribute("data-signout")) {
    return run(async () => window.location.assign((await post("/logout", {})).next), target);
  }
  const action = target.dataset.action;
  if (!action) return;
  const scope = target.closest("[data-service]");
  const comment = scope && scope.querySelector("[name=comment]");
  run(async () => {
    const done = await signAndSend({action, service: scope.dataset.service, env: scope.dataset.env,
                                    comment: comment ? comment.value : ""});
    say(done.result, true);
  }, target);
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.id !== "create-service") return;
  event.preventDefault();
  const button = form.querySelector("button[type=submit]");
  run(async () => {
    const done = await signAndSend({action: "create", spec: formSpec(form),
                                    comment: form.querySelector("[name=reason]").value});
    say(done.result, true);
  }, button);
});

function live() {
  const region = document.getElementById("live");
  if (!region || !region.dataset.live || !window.EventSource) return;
  const source = new EventSource(region.dataset.live);
  source.addEventListener("live", (event) => {
    if (region.contains(document.activeElement) && document.activeElement.matches("input, textarea, select")) {
      return; // not while someone types in it: the next change comes again
    }
    region.innerHTML = event.data;
    region.dataset.updated = String(Date.now());
  });
}

live();
