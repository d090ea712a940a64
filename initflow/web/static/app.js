// The dashboard shell: sign-in, routing, the project list; the project page lives in
// progress.js and the create form in create.js. Only the public GraphQL API is used.

import { Api, SubscriptionClient } from "./graphql.js";
import { h, replaceChildren, setAttr, setText, focusElement } from "./dom.js";
import { mountProjectPage, stateBadge } from "./progress.js";
import { mountCreateForm } from "./create.js";
import { formatDate } from "./format.js";

const TOKEN_KEY = "initflow.token";
const LIST_PAGE_SIZE = 20;
const LIST_REFRESH_MS = 3_000;

const VIEWER_QUERY = `query DashboardViewer { viewer { id name } }`;
const PROJECTS_QUERY = `query DashboardProjects($first: Int!, $after: String, $status: ProjectState) {
  projects(first: $first, after: $after, status: $status) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id name slug template status createdAt initialization { progress } } }
  }
}`;

const els = {
  main: document.getElementById("main"),
  nav: document.getElementById("nav"),
  account: document.getElementById("account"),
  viewerName: document.getElementById("viewer-name"),
  signOut: document.getElementById("sign-out"),
  announcer: document.getElementById("announcer"),
  connection: document.getElementById("connection"),
  connectionText: document.getElementById("connection-text"),
  connectionRetry: document.getElementById("connection-retry"),
  favicon: document.getElementById("favicon"),
};

let token = readToken();
let currentView = null;
let signInMessage = "";

const api = new Api({
  getToken: () => token,
  onUnauthenticated: () => signOut("Your token is no longer accepted. Sign in again."),
});
const ws = new SubscriptionClient({
  getToken: () => token,
  onAuthFailed: () => verifyToken(),
});

// -- shell services handed to views ---------------------------------------------------------

let announceTimer = null;
/** One polite message in the persistent live region; a burst keeps only the last one. */
function announce(message) {
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    if (els.announcer.textContent === message) els.announcer.textContent = "";
    setTimeout(() => setText(els.announcer, message), 30);
  }, 120);
}

function setTitle(text, raw = false) {
  const title = raw ? text : text ? `${text} — initflow` : "initflow";
  if (document.title !== title) document.title = title;
}

function setFavicon(kind) {
  const href = kind ? `/static/favicon-${kind}.svg` : "/static/favicon.svg";
  if (els.favicon.getAttribute("href") !== href) els.favicon.setAttribute("href", href);
}

let bannerRetry = null;
const banner = {
  show({ text, escalated, onRetry }) {
    bannerRetry = onRetry;
    els.connection.classList.add("is-visible");
    els.connection.classList.toggle("is-escalated", Boolean(escalated));
    setText(els.connectionText, text);
    setAttr(els.connectionRetry, "hidden", null);
  },
  hide() {
    bannerRetry = null;
    if (els.connectionRetry.contains(document.activeElement)) focusElement(els.main);
    els.connection.classList.remove("is-visible", "is-escalated");
    setText(els.connectionText, "");
    setAttr(els.connectionRetry, "hidden", true);
  },
};
els.connectionRetry.addEventListener("click", () => bannerRetry?.());

// -- token ----------------------------------------------------------------------------------

function readToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || null;
  } catch {
    return null;
  }
}

function storeToken(value) {
  token = value;
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* private mode: the token lives for this page only */
  }
}

function signOut(message = "") {
  storeToken(null);
  ws.close();
  signInMessage = message;
  route();
}

/** The socket refused our token: ask over HTTP whether it is really invalid. */
async function verifyToken() {
  try {
    await api.request(VIEWER_QUERY, {}, { quietAuth: true });
  } catch (error) {
    if (error.code === "UNAUTHENTICATED")
      signOut("Your token is no longer accepted. Sign in again.");
  }
}

window.addEventListener("storage", (event) => {
  if (event.key !== TOKEN_KEY) return;
  token = readToken();
  if (!token) ws.close();
  route();
});

async function loadViewer() {
  try {
    const data = await api.request(VIEWER_QUERY);
    setText(els.viewerName, data.viewer.name);
    setAttr(els.viewerName, "title", `Signed in as ${data.viewer.name}`);
  } catch {
    /* UNAUTHENTICATED signs out via the Api hook; other errors leave the name blank */
  }
}

els.signOut.addEventListener("click", () => {
  signOut("");
  announce("Signed out.");
});

// -- routing --------------------------------------------------------------------------------

const ROUTES = [
  [/^\/$/, () => mountList],
  [/^\/projects\/new\/?$/, () => mountCreate],
  [/^\/projects\/([^/]+)\/?$/, (m) => (root) => mountProject(root, decodeURIComponent(m[1]))],
];

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState({}, "", path);
  else history.pushState({}, "", path);
  route({ focus: true });
}

function route({ focus = false } = {}) {
  currentView?.destroy?.();
  currentView = null;
  banner.hide();
  setFavicon(null);
  const signedIn = Boolean(token);
  setAttr(els.nav, "hidden", signedIn ? null : true);
  setAttr(els.account, "hidden", signedIn ? null : true);
  if (!signedIn) {
    currentView = mountSignIn(els.main);
    return;
  }
  const path = location.pathname;
  let mount = null;
  for (const [pattern, factory] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      mount = factory(match);
      break;
    }
  }
  markCurrentNav(path);
  currentView = (mount ?? mountNotFound)(els.main);
  if (focus) {
    window.scrollTo(0, 0);
    focusElement(els.main.querySelector("h1") ?? els.main);
  }
}

function markCurrentNav(path) {
  for (const link of els.nav.querySelectorAll("a")) {
    const target = link.getAttribute("href");
    setAttr(link, "aria-current", target === path ? "page" : null);
  }
}

document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest?.("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin) return;
  if (!(url.pathname === "/" || url.pathname.startsWith("/projects"))) return;
  event.preventDefault();
  if (url.pathname === location.pathname && !url.hash) {
    focusElement(els.main.querySelector("h1") ?? els.main);
    return;
  }
  navigate(url.pathname + url.search);
});

window.addEventListener("popstate", () => route({ focus: true }));

// -- views ----------------------------------------------------------------------------------

function mountSignIn(root) {
  setTitle("Sign in");
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    autocapitalize: "off",
    required: true,
    "aria-describedby": "token-hint token-error",
  });
  const error = h("p", { id: "token-error", class: "field-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "button button--primary" }, "Sign in");
  let busy = false;
  const form = h(
    "form",
    { class: "card form signin", novalidate: true },
    h(
      "div",
      { class: "field" },
      h("label", { for: "token" }, "API token"),
      h(
        "p",
        { class: "hint", id: "token-hint" },
        "initflow serve prints the admin token on its first start; ",
        h("code", {}, "initflow users create NAME"),
        " makes one for another user. It is kept in this browser until you sign out.",
      ),
      input,
      error,
    ),
    h("div", { class: "actions" }, submit),
  );
  const showError = (message) => {
    setText(error, message);
    setAttr(input, "aria-invalid", message ? "true" : null);
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    const candidate = input.value.trim();
    if (!candidate) {
      showError("Enter your API token.");
      input.focus();
      return;
    }
    busy = true;
    setAttr(submit, "aria-disabled", "true");
    setText(submit, "Signing in…");
    try {
      const data = await api.request(VIEWER_QUERY, {}, { token: candidate, quietAuth: true });
      storeToken(candidate);
      signInMessage = "";
      setText(els.viewerName, data.viewer.name);
      announce(`Signed in as ${data.viewer.name}.`);
      route({ focus: true });
    } catch (err) {
      showError(
        err.code === "UNAUTHENTICATED"
          ? "That token was not accepted. Check that you copied all of it (tokens start with “ifl_”), or ask for a new one."
          : err.network
            ? "Couldn't reach the server. Check your connection and try again."
            : `Sign-in failed: ${err.message}`,
      );
      input.focus();
      input.select();
    } finally {
      busy = false;
      setAttr(submit, "aria-disabled", null);
      setText(submit, "Sign in");
    }
  });
  const notice = signInMessage
    ? h("p", { class: "notice notice--warning", role: "status" }, signInMessage)
    : null;
  replaceChildren(
    root,
    h("h1", { tabindex: "-1", class: "page-title" }, "Sign in"),
    h(
      "p",
      { class: "lead" },
      "initflow creates projects from templates and shows their setup as it happens.",
    ),
    notice,
    form,
  );
  input.focus();
  return { destroy() {} };
}

function mountNotFound(root) {
  setTitle("Page not found");
  replaceChildren(
    root,
    h("h1", { tabindex: "-1", class: "page-title" }, "Page not found"),
    h(
      "p",
      {},
      "There is nothing at this address. ",
      h("a", { href: "/" }, "Go to your projects"),
      ".",
    ),
  );
  return { destroy() {} };
}

function mountProject(root, id) {
  return mountProjectPage(root, id, {
    api,
    ws,
    announce,
    banner,
    setTitle,
    setFavicon,
    navigate,
    onUnauthenticated: () => signOut("Your token is no longer accepted. Sign in again."),
  });
}

function mountCreate(root) {
  return mountCreateForm(root, { api, announce, setTitle, navigate });
}

function mountList(root) {
  setTitle("Projects");
  let destroyed = false;
  let refreshTimer = null;
  let filter = "";
  let rows = new Map();
  let loadedCount = LIST_PAGE_SIZE;
  let endCursor = null;

  const filterSelect = h(
    "select",
    { id: "state-filter" },
    h("option", { value: "" }, "All states"),
    h("option", { value: "INITIALIZING" }, "Initializing"),
    h("option", { value: "ACTIVE" }, "Active"),
    h("option", { value: "FAILED" }, "Failed"),
    h("option", { value: "CANCELED" }, "Canceled"),
  );
  const count = h("p", { class: "list-count", "aria-live": "polite" });
  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "projects", hidden: true },
    h("caption", { class: "visually-hidden" }, "Your projects"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col" }, "Template"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, "Created"),
      ),
    ),
    tbody,
  );
  const empty = h("div", { class: "card empty", hidden: true });
  const errorBox = h("div", { class: "notice notice--error", role: "alert", hidden: true });
  const more = h("button", { type: "button", class: "button", hidden: true }, "Show more");
  const loading = h("p", { class: "hint", "aria-busy": "true" }, "Loading projects…");

  replaceChildren(
    root,
    h(
      "div",
      { class: "page-header" },
      h("h1", { tabindex: "-1", class: "page-title" }, "Projects"),
      h("a", { href: "/projects/new", class: "button button--primary" }, "New project"),
    ),
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "state-filter" }, "Show"),
      filterSelect,
      count,
    ),
    loading,
    errorBox,
    empty,
    table,
    h("div", { class: "actions" }, more),
  );

  async function load({ append = false } = {}) {
    clearTimeout(refreshTimer);
    const variables = {
      first: append ? LIST_PAGE_SIZE : Math.min(100, loadedCount),
      after: append ? endCursor : null,
      status: filter || null,
    };
    let data;
    try {
      data = await api.request(PROJECTS_QUERY, variables);
    } catch (error) {
      if (destroyed || error.code === "UNAUTHENTICATED") return;
      setAttr(loading, "hidden", true);
      setAttr(errorBox, "hidden", null);
      replaceChildren(
        errorBox,
        h("p", {}, error.network ? "Couldn't reach the server." : error.message),
        h("button", { type: "button", class: "button", onclick: () => load() }, "Try again"),
      );
      scheduleRefresh(true);
      return;
    }
    if (destroyed) return;
    setAttr(errorBox, "hidden", true);
    setAttr(loading, "hidden", true);
    const connection = data.projects;
    const nodes = connection.edges.map((e) => e.node);
    if (!append) {
      const keep = new Set(nodes.map((n) => n.id));
      for (const [id, row] of rows) {
        if (!keep.has(id)) {
          row.tr.remove();
          rows.delete(id);
        }
      }
    }
    for (const node of nodes) upsertRow(node);
    if (!append) {
      nodes.forEach((node, i) => {
        const tr = rows.get(node.id).tr;
        if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] ?? null);
      });
    }
    loadedCount = rows.size;
    endCursor = connection.pageInfo.endCursor;
    setAttr(more, "hidden", connection.pageInfo.hasNextPage ? null : true);
    setText(
      count,
      `${connection.totalCount} project${connection.totalCount === 1 ? "" : "s"}${filter ? ` ${filter.toLowerCase()}` : ""}`,
    );
    const none = rows.size === 0;
    setAttr(table, "hidden", none ? true : null);
    setAttr(empty, "hidden", none ? null : true);
    if (none) {
      replaceChildren(
        empty,
        h("p", {}, filter ? "No projects in this state." : "No projects yet."),
        filter
          ? null
          : h(
              "p",
              {},
              h(
                "a",
                { href: "/projects/new", class: "button button--primary" },
                "Create your first project",
              ),
            ),
      );
    }
    scheduleRefresh(nodes.some((n) => n.status === "INITIALIZING"));
  }

  function upsertRow(node) {
    let row = rows.get(node.id);
    if (!row) {
      const link = h("a", { href: `/projects/${encodeURIComponent(node.id)}` });
      const badge = h("td", {});
      const tr = h(
        "tr",
        { dataset: { projectId: node.id } },
        h("th", { scope: "row" }, link),
        h("td", {}, h("code", { class: "muted-code" }, node.template)),
        badge,
        h("td", {}, formatDate(node.createdAt)),
      );
      row = { tr, link, badge, key: null };
      rows.set(node.id, row);
      tbody.append(tr);
    }
    setText(row.link, node.name);
    const extra = node.status === "INITIALIZING" ? `${node.initialization?.progress ?? 0}%` : "";
    const key = `${node.status}|${extra}`;
    if (row.key !== key) {
      row.key = key;
      replaceChildren(row.badge, stateBadge(node.status, extra));
    }
  }

  function scheduleRefresh(active) {
    clearTimeout(refreshTimer);
    if (!active || destroyed) return;
    refreshTimer = setTimeout(() => {
      if (document.visibilityState === "visible") load();
      else scheduleRefresh(true);
    }, LIST_REFRESH_MS);
  }

  filterSelect.addEventListener("change", () => {
    filter = filterSelect.value;
    loadedCount = LIST_PAGE_SIZE;
    for (const row of rows.values()) row.tr.remove();
    rows = new Map();
    load();
  });
  more.addEventListener("click", () => load({ append: true }));
  load();

  return {
    destroy() {
      destroyed = true;
      clearTimeout(refreshTimer);
    },
  };
}

// -- start ----------------------------------------------------------------------------------

if (token) loadViewer();
route();
