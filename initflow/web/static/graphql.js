// The dashboard's only way to the server: GraphQL over HTTP POST, and subscriptions over
// one WebSocket speaking graphql-transport-ws (connection_init with the token, ping/pong,
// reconnect with exponential backoff and jitter, subscriptions re-sent on every new
// connection with freshly computed variables, so a caller resumes with afterSeq).

const ENDPOINT = "/graphql";
const REQUEST_TIMEOUT_MS = 20_000;

export class ApiError extends Error {
  /**
   * code: the first error's extensions.code (UNAUTHENTICATED, NOT_FOUND, …) or null;
   * network: true when the server could not be reached (worth trying again).
   */
  constructor(message, { code = null, network = false, errors = [] } = {}) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.network = network;
    this.errors = errors;
  }
}

export class Api {
  constructor({ getToken, onUnauthenticated }) {
    this.getToken = getToken;
    this.onUnauthenticated = onUnauthenticated;
    /** The last HTTP Date header (1 s resolution): a lower bound of the server's clock. */
    this.lastServerDate = null;
  }

  /**
   * Run one query or mutation; resolves to `data`, rejects with ApiError.
   * options.token overrides the stored token (sign-in check); options.quietAuth keeps an
   * UNAUTHENTICATED answer from signing the user out.
   */
  async request(query, variables = {}, options = {}) {
    const token = options.token ?? this.getToken();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(ENDPOINT, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/graphql-response+json, application/json",
          ...(token ? { Authorization: `Bearer ${token}` } : {}),
        },
        body: JSON.stringify({ query, variables }),
        cache: "no-store",
        signal: controller.signal,
      });
    } catch {
      throw new ApiError("Couldn't reach the server. Check your connection and try again.", {
        network: true,
      });
    } finally {
      clearTimeout(timer);
    }
    const date = Date.parse(response.headers.get("Date") ?? "");
    if (Number.isFinite(date)) this.lastServerDate = { server: date, local: Date.now() };
    let body;
    try {
      body = await response.json();
    } catch {
      throw new ApiError(`The server answered with HTTP ${response.status}.`, {
        network: response.status >= 500,
      });
    }
    const errors = Array.isArray(body?.errors) ? body.errors : [];
    if (errors.length) {
      const code = errors[0]?.extensions?.code ?? null;
      if (code === "UNAUTHENTICATED" && !options.quietAuth) this.onUnauthenticated?.();
      throw new ApiError(errors[0]?.message || "The request failed.", { code, errors });
    }
    if (!response.ok || !body || typeof body.data !== "object") {
      throw new ApiError(`The server answered with HTTP ${response.status}.`, {
        network: response.status >= 500,
      });
    }
    return body.data;
  }
}

// ---------------------------------------------------------------------------------------
// graphql-transport-ws

const ACK_TIMEOUT_MS = 10_000;
const PING_INTERVAL_MS = 10_000;
const PONG_TIMEOUT_MS = 5_000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15_000;
const IDLE_CLOSE_MS = 2_000;
const CLOSE_FORBIDDEN = 4403; // connection_init refused: the token is not (or no longer) valid

/**
 * One shared WebSocket for all subscriptions of the page.
 *
 * state: "idle" (no subscriptions) | "connecting" | "open" | "reconnecting".
 * Listeners get { state, lostSince, nextRetryAt, attempt } whenever it changes.
 */
export class SubscriptionClient {
  constructor({ getToken, onAuthFailed, url = null }) {
    this.getToken = getToken;
    this.onAuthFailed = onAuthFailed;
    this.url = url ?? SubscriptionClient.defaultUrl();
    this.socket = null;
    this.subs = new Set();
    this.nextId = 1;
    this.attempt = 0;
    this.state = "idle";
    this.lostSince = null;
    this.nextRetryAt = null;
    this.listeners = new Set();
    this.timers = { retry: null, ack: null, ping: null, pong: null, idle: null };
    window.addEventListener("offline", () => this.#drop("browser offline"));
    window.addEventListener("online", () => this.retryNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.state === "reconnecting") this.retryNow();
    });
  }

  static defaultUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${ENDPOINT}`;
  }

  onStateChange(listener) {
    this.listeners.add(listener);
    listener(this.snapshot());
    return () => this.listeners.delete(listener);
  }

  snapshot() {
    return {
      state: this.state,
      lostSince: this.lostSince,
      nextRetryAt: this.nextRetryAt,
      attempt: this.attempt,
    };
  }

  /**
   * Subscribe; `variables()` is called on every (re)send, so it can return the latest
   * afterSeq. Handlers: next(payload) with payload = { data, errors }, error(errors),
   * complete(). Returns a function that stops the subscription.
   */
  subscribe({ query, variables, next, error, complete }) {
    const sub = { query, variables, next, error, complete, opId: null };
    this.subs.add(sub);
    clearTimeout(this.timers.idle);
    if (this.state === "open") this.#send(sub);
    else if (this.state === "idle") this.#connect();
    return () => this.#unsubscribe(sub);
  }

  /** Reconnect at once instead of waiting for the backoff timer. */
  retryNow() {
    if (this.state !== "reconnecting") return;
    if (!this.subs.size) return;
    clearTimeout(this.timers.retry);
    this.#connect();
  }

  /** Close everything (sign out). */
  close() {
    this.subs.clear();
    this.#teardownSocket(1000, "client closed");
    this.#clearTimers();
    this.attempt = 0;
    this.lostSince = null;
    this.#setState("idle");
  }

  // -- internals --------------------------------------------------------------------------

  #setState(state) {
    this.state = state;
    const snap = this.snapshot();
    for (const listener of this.listeners) listener(snap);
  }

  #clearTimers() {
    for (const key of Object.keys(this.timers)) {
      clearTimeout(this.timers[key]);
      clearInterval(this.timers[key]);
      this.timers[key] = null;
    }
  }

  #connect() {
    this.#teardownSocket(1000, "reconnecting");
    clearTimeout(this.timers.retry);
    this.nextRetryAt = null;
    this.#setState(this.lostSince ? "reconnecting" : "connecting");
    let socket;
    try {
      socket = new WebSocket(this.url, "graphql-transport-ws");
    } catch {
      this.#drop("could not open socket");
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (socket !== this.socket) return;
      const token = this.getToken();
      this.#raw({
        type: "connection_init",
        payload: token ? { authorization: `Bearer ${token}` } : {},
      });
      this.timers.ack = setTimeout(() => this.#drop("no connection_ack"), ACK_TIMEOUT_MS);
    };
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      this.#onMessage(event.data);
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      // 4403: the token was refused. Keep retrying with backoff (the refusal may have been
      // a passing problem) and let the app ask over HTTP whether to sign out.
      this.#drop(`closed ${event.code}`);
      if (event.code === CLOSE_FORBIDDEN) this.onAuthFailed?.();
    };
    socket.onerror = () => {
      /* onclose follows and decides */
    };
  }

  #onMessage(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      this.#drop("unparseable message");
      return;
    }
    this.#alive();
    switch (message.type) {
      case "connection_ack":
        clearTimeout(this.timers.ack);
        this.attempt = 0;
        this.lostSince = null;
        this.#setState("open");
        this.#startKeepalive();
        for (const sub of this.subs) this.#send(sub);
        break;
      case "ping":
        this.#raw({ type: "pong" });
        break;
      case "pong":
        break;
      case "next": {
        const sub = this.#byOpId(message.id);
        sub?.next?.(message.payload ?? {});
        break;
      }
      case "error": {
        const sub = this.#byOpId(message.id);
        if (sub) {
          this.subs.delete(sub);
          sub.error?.(Array.isArray(message.payload) ? message.payload : [message.payload]);
          this.#maybeIdle();
        }
        break;
      }
      case "complete": {
        const sub = this.#byOpId(message.id);
        if (sub) {
          this.subs.delete(sub);
          sub.complete?.();
          this.#maybeIdle();
        }
        break;
      }
      default:
        break;
    }
  }

  #byOpId(id) {
    for (const sub of this.subs) if (sub.opId === id) return sub;
    return null;
  }

  #send(sub) {
    sub.opId = String(this.nextId++);
    this.#raw({
      id: sub.opId,
      type: "subscribe",
      payload: { query: sub.query, variables: sub.variables ? sub.variables() : {} },
    });
  }

  #raw(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  #unsubscribe(sub) {
    if (!this.subs.has(sub)) return;
    this.subs.delete(sub);
    if (sub.opId && this.state === "open") this.#raw({ id: sub.opId, type: "complete" });
    this.#maybeIdle();
  }

  #maybeIdle() {
    if (this.subs.size) return;
    clearTimeout(this.timers.idle);
    this.timers.idle = setTimeout(() => {
      if (this.subs.size) return;
      this.#teardownSocket(1000, "idle");
      this.#clearTimers();
      this.attempt = 0;
      this.lostSince = null;
      this.#setState("idle");
    }, IDLE_CLOSE_MS);
  }

  #startKeepalive() {
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => {
      this.#raw({ type: "ping" });
      clearTimeout(this.timers.pong);
      this.timers.pong = setTimeout(() => this.#drop("no pong"), PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  #alive() {
    clearTimeout(this.timers.pong);
  }

  #teardownSocket(code = 1000, reason = "") {
    const socket = this.socket;
    this.socket = null;
    clearTimeout(this.timers.ack);
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) {
      try {
        socket.close(code, reason);
      } catch {
        /* already closing */
      }
    }
  }

  /** The connection is gone (or never came): keep the subscriptions, retry with backoff. */
  #drop(_reason) {
    if (this.state === "idle" && !this.socket) return;
    this.#teardownSocket(1000, "dropped");
    for (const sub of this.subs) sub.opId = null;
    if (!this.subs.size) {
      this.#clearTimers();
      this.#setState("idle");
      return;
    }
    if (this.lostSince === null) this.lostSince = Date.now();
    // Full jitter over an exponential ceiling: clients that lost the same server do not
    // all come back in the same millisecond.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt += 1;
    this.nextRetryAt = Date.now() + delay;
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => this.#connect(), delay);
    this.#setState("reconnecting");
  }
}
