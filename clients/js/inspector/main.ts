// The web inspector `tether serve` shows at GET /. It is built on the same client and
// store applications use, so it doubles as their most visible example and as a check
// that they hold up in a real browser (the end-to-end tests drive this page).
//
// It subscribes to the selected resource (`/?resource=<name>`) through a live store
// query, renders rows keyed by id (so a row being edited keeps its focus and draft
// while others change around it), writes through the store (optimistic, rolled back
// with a notice on failure), and joins the presence room `inspector` so each tab
// shows who else is looking.

import { TetherClient, TetherStore, type ConnectionState, type LiveQuery, type StoreRecord } from "../src/index.js";

const ROOM = "inspector";
const RESOURCE_POLL_MS = 5_000;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const selected = new URLSearchParams(location.search).get("resource");
// On a server with auth on, open the page as `/#token=<JWT>`: the fragment never
// leaves the browser, so the token stays out of server and proxy logs.
const token = new URLSearchParams(location.hash.slice(1)).get("token") ?? undefined;
const me = tokenSubject(token) ?? userName();
const client = new TetherClient({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
  token,
  // Someone is looking at this page: come back soon after the server does.
  reconnect: { maxDelayMs: 3_000 },
});
const store = new TetherStore(client);
// For debugging from the console (and for the end-to-end tests).
(globalThis as { tether?: unknown }).tether = { client, store, me };

/**
 * With auth on, the server lets a caller join rooms only as itself: the token's `sub`.
 * (Read for display only; the server verifies the token.)
 */
function tokenSubject(jwt: string | undefined): string | undefined {
  try {
    const payload = jwt?.split(".")[1];
    if (!payload) return undefined;
    const sub = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")))?.sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** A short name per tab, kept across reloads of the tab, shown in others' presence lists. */
function userName(): string {
  const key = "tether-inspector-user";
  let name = sessionStorage.getItem(key);
  if (!name) {
    const bytes = crypto.getRandomValues(new Uint8Array(2));
    name = `guest-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
    sessionStorage.setItem(key, name);
  }
  return name;
}

// ----- connection state and presence ----------------------------------------------------

const STATE_TEXT: Record<ConnectionState, string> = {
  idle: "idle",
  connecting: "connecting…",
  ready: "connected",
  reconnecting: "reconnecting…",
  closed: "offline",
};

function showState(state: ConnectionState): void {
  const el = $("conn");
  el.dataset.state = state;
  el.textContent = STATE_TEXT[state];
}
client.on("state", showState);

function showMembers(members: string[]): void {
  const el = $("presence");
  el.replaceChildren();
  el.dataset.count = String(members.length);
  const label = document.createElement("span");
  label.textContent = members.length === 1 ? "only you here" : `${members.length} here:`;
  el.append(label);
  for (const m of members) {
    const chip = document.createElement("span");
    chip.className = m === me ? "user me" : "user";
    chip.dataset.user = m;
    chip.textContent = m === me ? `${m} (you)` : m;
    el.append(chip);
  }
}
client.on("members", (room, members) => {
  if (room === ROOM) showMembers(members);
});

// ----- resources list ---------------------------------------------------------------------

async function loadResources(): Promise<void> {
  let list: { name: string; records: number }[];
  try {
    const res = await fetch("/api", token ? { headers: { authorization: `Bearer ${token}` } } : {});
    list = ((await res.json()) as { resources: { name: string; records: number }[] }).resources;
  } catch {
    return; // the server is away; the connection badge already says so
  }
  if (selected && !list.some((r) => r.name === selected)) list.push({ name: selected, records: 0 });
  list.sort((a, b) => (a.name < b.name ? -1 : 1));
  const nav = $("resources");
  nav.replaceChildren(
    ...list.map((r) => {
      const a = document.createElement("a");
      a.href = `/?resource=${encodeURIComponent(r.name)}${location.hash}`; // keeps a #token
      a.dataset.resource = r.name;
      if (r.name === selected) a.className = "on";
      const name = document.createElement("span");
      name.textContent = r.name;
      const count = document.createElement("span");
      count.className = "count";
      // The selected resource's count comes from the live table, so it is never stale.
      count.textContent = String(r.name === selected && query ? query.records.length : r.records);
      a.append(name, count);
      return a;
    }),
  );
}

$("open-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = ($("open-name") as HTMLInputElement).value.trim();
  if (name) location.search = `?resource=${encodeURIComponent(name)}`;
});

// ----- the live table ---------------------------------------------------------------------

let query: LiveQuery | undefined;
const rows = new Map<string, HTMLTableRowElement>();
/** Rows being edited: their draft text and the version the edit started from. */
const editing = new Map<string, { draft: string; version: number }>();
const rendered = new Map<string, string>();

function notice(text: string, kind: "error" | "info" = "info"): void {
  const el = $("notice");
  el.textContent = text;
  el.className = kind;
}

function button(label: string, cls: string, onClick: () => void): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

function parseObject(text: string): Record<string, any> | undefined {
  try {
    const v = JSON.parse(text);
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
    notice("data must be a JSON object, e.g. {\"title\": \"milk\"}", "error");
  } catch (e) {
    notice(`not valid JSON: ${(e as Error).message}`, "error");
  }
  return undefined;
}

function fillRow(tr: HTMLTableRowElement, r: StoreRecord): void {
  const id = document.createElement("td");
  id.className = "id";
  id.textContent = r.id;
  const version = document.createElement("td");
  version.className = "version";
  version.textContent = r.pending ? `${r.version}+` : String(r.version);
  const data = document.createElement("td");
  data.className = "data";
  const actions = document.createElement("td");
  actions.className = "actions";
  const edit = editing.get(r.id);
  if (edit) {
    const area = document.createElement("textarea");
    area.value = edit.draft;
    area.addEventListener("input", () => (edit.draft = area.value));
    data.append(area);
    if (r.version !== edit.version) {
      const warn = document.createElement("div");
      warn.className = "stale";
      warn.textContent = `changed elsewhere since you started (now version ${r.version}); saving will fail`;
      data.append(warn);
    }
    actions.append(
      button("Save", "primary save", () => void save(r.id)),
      button("Cancel", "cancel", () => {
        editing.delete(r.id);
        render();
      }),
    );
  } else {
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(r.data, null, 1);
    data.append(pre);
    actions.append(
      button("Edit", "edit", () => {
        editing.set(r.id, { draft: JSON.stringify(r.data, null, 2), version: r.version });
        render();
      }),
      deleteButton(r),
    );
  }
  tr.replaceChildren(id, version, data, actions);
}

/** Delete asks once more in place rather than with a blocking dialog. */
function deleteButton(r: StoreRecord): HTMLButtonElement {
  const b = button("Delete", "danger delete", () => {
    if (b.dataset.armed !== "1") {
      b.dataset.armed = "1";
      b.textContent = "Sure?";
      setTimeout(() => {
        b.dataset.armed = "";
        b.textContent = "Delete";
      }, 3_000);
      return;
    }
    store.delete(selected!, r.id, { version: r.version }).then(
      () => notice(`deleted ${r.id}`),
      (e) => notice(`delete of ${r.id} failed: ${(e as Error).message}`, "error"),
    );
  });
  return b;
}

async function save(id: string): Promise<void> {
  const edit = editing.get(id);
  if (!edit) return;
  const data = parseObject(edit.draft);
  if (!data) return;
  editing.delete(id);
  render();
  try {
    const r = await store.update(selected!, id, data, { version: edit.version });
    notice(`saved ${id} (version ${r.version})`);
  } catch (e) {
    notice(`save of ${id} failed: ${(e as Error).message}`, "error");
  }
}

function render(): void {
  if (!query) return;
  const body = $("rows");
  const seen = new Set<string>();
  query.records.forEach((r, i) => {
    seen.add(r.id);
    let tr = rows.get(r.id);
    const key = JSON.stringify([r.version, r.pending, r.data, editing.get(r.id)?.version]);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.id = r.id;
      rows.set(r.id, tr);
    }
    if (rendered.get(r.id) !== key) {
      const changed = rendered.has(r.id);
      rendered.set(r.id, key);
      // Rebuilding an edited row would throw away the draft's cursor; only its
      // version warning needs to change, so rebuild it only when it was not shown yet.
      if (!editing.has(r.id) || !tr.querySelector("textarea") || r.version !== editing.get(r.id)!.version) fillRow(tr, r);
      tr.dataset.version = String(r.version);
      tr.classList.toggle("pending", r.pending > 0);
      if (changed && r.pending === 0) {
        tr.classList.remove("flash");
        void tr.offsetWidth; // restart the animation
        tr.classList.add("flash");
      }
    }
    // Move only rows that are out of place: moving a row would blur an editor in it.
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] ?? null);
  });
  for (const [id, tr] of rows) {
    if (seen.has(id)) continue;
    tr.remove();
    rows.delete(id);
    rendered.delete(id);
    editing.delete(id);
  }
  $("empty").hidden = query.records.length > 0 || query.status !== "ready";
  const sub = query.subscription;
  $("position").textContent = sub.pos === undefined ? "" : `${query.records.length} records · live at change ${sub.pos}`;
  const count = document.querySelector(`nav a.on .count`);
  if (count) count.textContent = String(query.records.length);
}

$("create-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const idInput = $("new-id") as HTMLInputElement;
  const dataInput = $("new-data") as HTMLTextAreaElement;
  const data = parseObject(dataInput.value);
  if (!data || !selected) return;
  const id = idInput.value.trim() || undefined;
  idInput.value = "";
  store.create(selected, data, id === undefined ? {} : { id }).then(
    (r) => {
      notice(`created ${r.id}`);
      void loadResources();
    },
    (err) => notice(`create failed: ${(err as Error).message}`, "error"),
  );
});

// ----- start ---------------------------------------------------------------------------------

if (selected) {
  $("title").textContent = selected;
  document.title = `${selected} · Tether inspector`;
  $("resource-view").hidden = false;
  query = store.query(selected);
  query.onChange(render);
}
showState(client.state);
client.on("ready", () => void loadResources());
setInterval(() => {
  if (client.state === "ready") void loadResources();
}, RESOURCE_POLL_MS);
client.connect().catch((e) => notice(`cannot connect: ${(e as Error).message}`, "error"));
client.join(ROOM, me).then(showMembers, (e) => notice(`cannot join the presence room: ${(e as Error).message}`, "error"));
