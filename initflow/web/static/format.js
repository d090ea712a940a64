// Time and number formatting, and the server clock estimate behind every timer.

/**
 * Estimates server time. Every sample is a lower bound of (server clock - local clock):
 * an event's `at`, a running step's startedAt + durationMs, or an HTTP Date header were
 * all stamped by the server *before* we received them. The largest sample is the best
 * estimate, so timers count from the server's startedAt and survive a reload exactly.
 */
export class ServerClock {
  constructor() {
    this.offset = null;
  }

  sample(serverMs, receivedAt = Date.now()) {
    if (!Number.isFinite(serverMs)) return;
    const candidate = serverMs - receivedAt;
    if (this.offset === null || candidate > this.offset) this.offset = candidate;
  }

  sampleIso(iso, receivedAt = Date.now()) {
    this.sample(parseTime(iso), receivedAt);
  }

  now() {
    return Date.now() + (this.offset ?? 0);
  }
}

export function parseTime(iso) {
  if (!iso) return NaN;
  return Date.parse(iso);
}

/** A finished duration: "0.4 s", "4.2 s", "42 s", "1:05", "1:02:03". */
export function formatDuration(ms) {
  const value = Math.max(0, ms);
  if (value < 10_000) return `${(value / 1000).toFixed(1)} s`;
  const seconds = Math.round(value / 1000);
  if (seconds < 60) return `${seconds} s`;
  return clockDuration(seconds);
}

/** A running timer, ticking once a second: "0:07", "1:05", "1:02:03". */
export function formatElapsed(ms) {
  return clockDuration(Math.floor(Math.max(0, ms) / 1000));
}

function clockDuration(totalSeconds) {
  const h = Math.floor(totalSeconds / 3600);
  const m = Math.floor((totalSeconds % 3600) / 60);
  const s = totalSeconds % 60;
  const ss = String(s).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** Words for a screen reader: "1 minute 5 seconds". */
export function spokenDuration(ms) {
  const total = Math.round(Math.max(0, ms) / 1000);
  const m = Math.floor(total / 60);
  const s = total % 60;
  const parts = [];
  if (m) parts.push(`${m} minute${m === 1 ? "" : "s"}`);
  if (s || !m) parts.push(`${s} second${s === 1 ? "" : "s"}`);
  return parts.join(" ");
}

/** Local wall-clock time of a server timestamp: "14:03:07". */
export function formatClock(ms) {
  if (!Number.isFinite(ms)) return "";
  return new Date(ms).toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** "3 Nov, 14:03" (or "14:03" today). */
export function formatDate(iso) {
  const t = parseTime(iso);
  if (!Number.isFinite(t)) return "";
  const date = new Date(t);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (sameDay) return `today, ${time}`;
  return `${date.toLocaleDateString([], { day: "numeric", month: "short", year: "numeric" })}, ${time}`;
}

export function humanize(name) {
  const words = String(name).replace(/[_-]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
