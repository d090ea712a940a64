// What one ProjectStatus looks like: the header, each step's state word, detail and time,
// and what the live region says on a transition. Pure functions of (status, server time),
// so the page renders identically from a snapshot, an event or a re-read.

import { h } from "./dom.js";
import { parseTime, formatDuration, formatElapsed, formatClock, spokenDuration } from "./format.js";

/** A running step with no update for this long shows "No update since … — still working". */
const STALL_AFTER_MS = 30_000;
/** With no step running, the page says "Queued" only after this long without news. */
const QUEUED_GRACE_MS = 1_500;

export const STEP_LOOK = {
  completed: { icon: "✓", word: "Completed" },
  running: { icon: "", word: "In progress" },
  stalled: { icon: "❙❙", word: "In progress" },
  retrying: { icon: "↻", word: "Waiting to retry" },
  queued: { icon: "◷", word: "Queued" },
  pending: { icon: "", word: "Pending" },
  failed: { icon: "✕", word: "Failed" },
  skipped: { icon: "↷", word: "Skipped" },
  canceled: { icon: "⊘", word: "Canceled" },
  notrun: { icon: "", word: "Not started" },
};

const PROJECT_BADGE = {
  INITIALIZING: "Initializing",
  ACTIVE: "Active",
  FAILED: "Failed",
  CANCELED: "Canceled",
};

export function stateBadge(status, extra = "") {
  const word = PROJECT_BADGE[status] ?? status;
  return h(
    "span",
    { class: `badge badge--${String(status).toLowerCase()}` },
    h("span", { class: "badge-dot", "aria-hidden": "true" }),
    extra ? `${word} · ${extra}` : word,
  );
}

export function runningStep(status) {
  return status.steps.find((s) => s.status === "RUNNING") ?? null;
}

export function isWaitingToRetry(step, now) {
  // The runner clears nextAttemptAt when it starts the step again.
  return step.status === "RUNNING" && Boolean(step.nextAttemptAt);
}

export function stalledSince(step, status, now) {
  if (step.status !== "RUNNING" || isWaitingToRetry(step, now)) return null;
  if (step.stalledSince) {
    // The server counts from the last progress report; so do we.
    return Math.max(parseTime(step.startedAt) || 0, parseTime(status.updatedAt) || 0);
  }
  const quietSince = Math.max(parseTime(step.startedAt) || 0, parseTime(status.updatedAt) || 0);
  return quietSince && now - quietSince >= STALL_AFTER_MS ? quietSince : null;
}

/** Everything the header shows, derived from one status. */
export function describe(status, now) {
  const steps = [...status.steps].sort((a, b) => a.position - b.position);
  const n = steps.length;
  const running = runningStep(status);
  const currentName = status.currentStep?.name ?? running?.name ?? null;
  const current = steps.find((s) => s.name === currentName) ?? null;
  const k = current ? steps.indexOf(current) + 1 : 0;
  const doneCount = steps.filter((s) => s.status === "COMPLETED" || s.status === "SKIPPED").length;
  const skipped = steps.filter((s) => s.status === "SKIPPED").length;
  const out = {
    current,
    n,
    k,
    heading: "",
    headingIcon: "",
    summary: "",
    valueText: "",
    note: "",
    noteKind: null,
    pageState: "",
    stalledStep: null,
  };

  switch (status.status) {
    case "ACTIVE": {
      out.current = null;
      out.pageState = "active";
      out.heading = "Project ready";
      out.headingIcon = "✓";
      out.summary = skipped
        ? `All ${n} steps done (${skipped} skipped)`
        : `All ${n} steps completed`;
      out.valueText = `Complete: ${n} of ${n} steps done`;
      const started = Math.min(...steps.map((s) => parseTime(s.startedAt)).filter(Number.isFinite));
      const ended = Math.max(...steps.map((s) => parseTime(s.completedAt)).filter(Number.isFinite));
      if (Number.isFinite(started) && Number.isFinite(ended) && ended >= started) {
        out.note = `Finished in ${formatDuration(ended - started)}.`;
        out.noteKind = "success";
      }
      break;
    }
    case "FAILED": {
      out.pageState = "failed";
      out.heading = "Setup failed";
      out.headingIcon = "✕";
      out.summary = current
        ? `Stopped at step ${k} of ${n} · ${current.title}`
        : `Stopped after ${doneCount} of ${n} steps`;
      out.valueText = current ? `Failed at step ${k} of ${n}: ${current.title}` : "Failed";
      break;
    }
    case "CANCELED": {
      out.current = null;
      const stopped =
        steps.find((s) => s.status === "PENDING" && s.message === "Canceled") ??
        steps.find((s) => s.status === "PENDING");
      const at = stopped ? steps.indexOf(stopped) + 1 : doneCount;
      out.pageState = "canceled";
      out.heading = "Initialization canceled";
      out.headingIcon = "⊘";
      out.summary = stopped
        ? `Canceled at step ${at} of ${n} · ${stopped.title}`
        : `Canceled after ${doneCount} of ${n} steps`;
      out.valueText = `Canceled: ${doneCount} of ${n} steps done`;
      out.note = `${doneCount} of ${n} steps completed and kept their results; nothing was rolled back.${stopped ? ` Resume continues with “${stopped.title}”.` : ""}`;
      out.noteKind = "neutral";
      break;
    }
    default: {
      const label = current
        ? `Step ${k} of ${n} · ${current.title}`
        : `${doneCount} of ${n} steps done`;
      out.summary = label;
      out.valueText = current
        ? `Step ${k} of ${n}: ${current.title}`
        : `${doneCount} of ${n} steps done`;
      if (running && isWaitingToRetry(running, now)) {
        const at = parseTime(running.nextAttemptAt);
        out.pageState = "retrying";
        out.heading = "Waiting to retry";
        out.headingIcon = "↻";
        out.note =
          at > now
            ? `${running.title} hit a temporary problem; the next attempt starts at ${formatClock(at)} (in ${formatElapsed(at - now + 999)}).`
            : `${running.title}: retry due — waiting for a worker.`;
        out.noteKind = "neutral";
      } else if (running) {
        out.pageState = "running";
        out.heading = "Setting up";
        out.headingIcon = "";
        const stalled = stalledSince(running, status, now);
        if (stalled) {
          out.stalledStep = running.name;
          out.note = `No update since ${formatClock(stalled)} (${spokenDuration(now - stalled)} ago) — still working.`;
          out.noteKind = "warning";
        }
      } else if (now - parseTime(status.updatedAt) < QUEUED_GRACE_MS) {
        // One step just finished and the next is about to start (or a retry was just
        // accepted): not worth a "Queued" flash.
        out.pageState = "starting";
        out.heading = "Setting up";
      } else {
        out.pageState = "queued";
        out.heading = "Queued — waiting for a worker";
        out.headingIcon = "◷";
        const since = parseTime(status.updatedAt);
        out.note = Number.isFinite(since)
          ? `Waiting since ${formatClock(since)} (${formatElapsed(now - since)}). No step has started yet.`
          : "No step has started yet.";
        out.noteKind = "neutral";
      }
    }
  }
  return out;
}

export function stepKind(step, status, view, now, connectionLost) {
  switch (step.status) {
    case "COMPLETED":
      return "completed";
    case "SKIPPED":
      return "skipped";
    case "FAILED":
      return "failed";
    case "RUNNING":
      if (isWaitingToRetry(step, now)) return "retrying";
      if (!connectionLost && view.stalledStep === step.name) return "stalled";
      return "running";
    default:
      if (status.status === "CANCELED") return step.message === "Canceled" ? "canceled" : "notrun";
      if (
        status.status === "INITIALIZING" &&
        view.pageState === "queued" &&
        view.current?.name === step.name
      )
        return "queued";
      return "pending";
  }
}

export function stepDetail(step, kind, now, status) {
  switch (kind) {
    case "running":
      return { text: step.message || "Working…", kind: "live" };
    case "stalled": {
      const since = stalledSince(step, status, now);
      return {
        text: `No update since ${formatClock(since)} — still working${step.message ? ` (last: ${step.message})` : ""}`,
        kind: "warning",
      };
    }
    case "retrying": {
      const at = parseTime(step.nextAttemptAt);
      const why = step.error ? `${step.error.message} (${step.error.code}). ` : "";
      const when = at > now ? `Retrying at ${formatClock(at)}` : "Retrying now";
      return { text: `${why}${when} — attempt ${step.attempts + 1}.`, kind: "neutral" };
    }
    case "failed":
      return {
        text: step.error ? `${step.error.message} (${step.error.code})` : step.message || "Failed",
        kind: "error",
      };
    case "queued":
      return { text: "Waiting for a worker to pick this up", kind: "neutral" };
    case "canceled":
      return { text: "Stopped here when the initialization was canceled", kind: "neutral" };
    case "completed":
    case "skipped":
      return { text: step.message || "", kind: "quiet" };
    default:
      return { text: "", kind: "quiet" };
  }
}

export function stepTime(step, kind, now) {
  const started = parseTime(step.startedAt);
  const completed = parseTime(step.completedAt);
  if (
    (kind === "completed" || kind === "skipped" || kind === "failed") &&
    Number.isFinite(started) &&
    Number.isFinite(completed)
  ) {
    return { text: formatDuration(completed - started), label: "took " };
  }
  if (kind === "completed" && Number.isFinite(step.durationMs)) {
    return { text: formatDuration(step.durationMs), label: "took " };
  }
  if ((kind === "running" || kind === "stalled") && Number.isFinite(started)) {
    return { text: formatElapsed(now - started), label: "elapsed " };
  }
  return { text: "", label: "" };
}

export function announceKey(status, view) {
  if (status.status !== "INITIALIZING") return status.status;
  if (view.pageState === "starting") return null; // between two steps: not worth a message
  return `${view.pageState}:${view.current?.name ?? ""}`;
}

export function transitionMessage(previous, status, view, name) {
  const steps = [...status.steps].sort((a, b) => a.position - b.position);
  const justDone = previous
    ? steps.filter(
        (s) =>
          (s.status === "COMPLETED" || s.status === "SKIPPED") &&
          previous.steps.find((p) => p.name === s.name)?.status !== s.status,
      )
    : [];
  const done = justDone.length
    ? `${justDone.map((s) => `${s.title} ${s.status === "SKIPPED" ? "skipped" : "done"}`).join(", ")}. `
    : "";
  switch (status.status) {
    case "ACTIVE":
      return `${done}Initialization complete: ${name} is ready.`;
    case "CANCELED":
      return "Initialization canceled.";
    case "FAILED":
      return null; // the role=alert panel speaks for failures
    default:
      if (view.pageState === "queued") return `${done}Queued — waiting for a worker.`;
      if (view.pageState === "retrying")
        return `${done}${view.current?.title ?? "A step"} will be retried shortly.`;
      return (
        `${done}${view.current ? `${view.current.title}… (step ${view.k} of ${view.n})` : ""}`.trim() ||
        null
      );
  }
}
