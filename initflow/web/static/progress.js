// The project page: the initialization as the server knows it, kept live.
//
// Restore: one HTTP query returns the project with its persisted status (the snapshot,
// with the seq of the last event it includes). Nothing step-like is drawn before it
// arrives — only a skeleton with aria-busy — and the first real render *is* the snapshot.
// Then initProgress(afterSeq: seq) streams exactly the later events; each carries the full
// status, so the page renders from the last one alone. A dropped socket keeps everything
// as it was (a banner says so); the client reconnects and resubscribes with the last seq
// it applied, so the catch-up is gap-free and duplicate-free.

import { h, setAttr, setText, focusElement, copyText, replaceChildren } from "./dom.js";
import { ServerClock, parseTime, formatDate } from "./format.js";
import {
  STEP_LOOK,
  announceKey,
  describe,
  stateBadge,
  stepDetail,
  stepKind,
  stepTime,
  transitionMessage,
} from "./status-view.js";

export { stateBadge };

const STATUS_FIELDS = `
  projectId status progress error seq updatedAt
  currentStep { name }
  steps {
    name title position status progress message attempts startedAt completedAt durationMs
    error { code message } nextAttemptAt stalledSince
  }`;

const PROJECT_QUERY = `query DashboardProject($id: ID!) {
  project(id: $id) {
    id name slug template status createdAt
    initialization { ${STATUS_FIELDS} }
    environments { name }
    repository { cloneUrl defaultBranch headCommit }
  }
}`;

const STATUS_QUERY = `query DashboardStatus($id: ID!) {
  projectStatus(projectId: $id) { ${STATUS_FIELDS} }
}`;

const DETAILS_QUERY = `query DashboardProjectDetails($id: ID!) {
  project(id: $id) { id status environments { name } repository { cloneUrl defaultBranch headCommit } }
}`;

const PROGRESS_SUBSCRIPTION = `subscription DashboardProgress($id: ID!, $afterSeq: Int) {
  initProgress(projectId: $id, afterSeq: $afterSeq) {
    seq type at
    step { name status progress message }
    status { ${STATUS_FIELDS} }
  }
}`;

const RETRY_MUTATION = `mutation DashboardRetry($id: ID!) {
  retryInitialization(projectId: $id) {
    status { ${STATUS_FIELDS} }
    userErrors { field message code }
  }
}`;

const CANCEL_MUTATION = `mutation DashboardCancel($id: ID!) {
  cancelInitialization(projectId: $id) {
    status { ${STATUS_FIELDS} }
    userErrors { field message code }
  }
}`;

/** The connection banner escalates to a warning after this long offline. */
const ESCALATE_AFTER_MS = 120_000;
/** A short blip does not flash the banner. */
const BANNER_DELAY_MS = 800;
/** Live-region budget for plain progress ("42% complete"): at most one per this interval. */
const PROGRESS_ANNOUNCE_MS = 10_000;
const TICK_MS = 250;
/** While a step runs and no event came for this long, re-read the status over HTTP: it
 * carries the server's own stall verdict (stalledSince) and double-checks the stream. */
const QUIET_RECHECK_MS = 5_000;
const SKELETON_ROWS = 7;

const TERMINAL = new Set(["ACTIVE", "FAILED", "CANCELED"]);

/**
 * Mount the page for project `projectId` into `root`.
 * ctx: { api, ws, announce, banner, setTitle, setFavicon, navigate, onNotFound }
 * Returns { destroy() }.
 */
export function mountProjectPage(root, projectId, ctx) {
  const page = new ProjectPage(root, projectId, ctx);
  page.start();
  return page;
}

class ProjectPage {
  constructor(root, projectId, ctx) {
    this.root = root;
    this.projectId = projectId;
    this.ctx = ctx;
    this.clock = new ServerClock();
    this.project = null;
    this.status = null;
    this.seq = -1;
    this.floor = 0;
    this.unsubscribe = null;
    this.unwatchSocket = null;
    this.socketState = { state: "idle", lostSince: null };
    this.bannerTimer = null;
    this.ticker = null;
    this.destroyed = false;
    this.busy = { retry: false, cancel: false };
    this.actionError = "";
    this.attention = null; // "done" | "failed" when it finished while the tab was hidden
    this.notify = false;
    this.announced = { key: null, status: null, progressAt: 0, percent: null };
    this.refs = null;
    this.onVisibility = () => this.#visibilityChanged();
    this.liveRetryTimer = null;
    this.liveFailures = 0;
    this.lastHeard = Date.now();
    this.rechecking = false;
  }

  start() {
    this.#renderShell();
    this.#load();
    document.addEventListener("visibilitychange", this.onVisibility);
    window.addEventListener("focus", this.onVisibility);
    this.ticker = setInterval(() => this.#tick(), TICK_MS);
  }

  destroy() {
    this.destroyed = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.unwatchSocket?.();
    clearInterval(this.ticker);
    clearTimeout(this.bannerTimer);
    clearTimeout(this.liveRetryTimer);
    document.removeEventListener("visibilitychange", this.onVisibility);
    window.removeEventListener("focus", this.onVisibility);
    this.ctx.banner.hide();
    this.ctx.setFavicon(null);
  }

  // -- loading -------------------------------------------------------------------------------

  #renderShell() {
    const heading = h(
      "h1",
      { tabindex: "-1", class: "page-title skeleton-text" },
      "Loading project…",
    );
    const skeleton = h(
      "section",
      { class: "card progress-card", "aria-busy": "true", "aria-label": "Initialization status" },
      h("p", { class: "visually-hidden" }, "Loading the initialization status…"),
      h("div", { class: "skeleton skeleton-heading", "aria-hidden": "true" }),
      h("div", { class: "skeleton skeleton-bar", "aria-hidden": "true" }),
      h(
        "div",
        { class: "skeleton-steps", "aria-hidden": "true" },
        Array.from({ length: SKELETON_ROWS }, () =>
          h(
            "div",
            { class: "skeleton-row" },
            h("span", { class: "skeleton skeleton-icon" }),
            h("span", { class: "skeleton skeleton-line" }),
          ),
        ),
      ),
    );
    this.shell = { heading, body: skeleton };
    replaceChildren(
      this.root,
      h("p", { class: "breadcrumb" }, h("a", { href: "/" }, "← Projects")),
      heading,
      skeleton,
    );
  }

  async #load() {
    let data;
    try {
      data = await this.ctx.api.request(PROJECT_QUERY, { id: this.projectId });
      this.#sampleHttpClock();
    } catch (error) {
      if (this.destroyed) return;
      if (error.code === "UNAUTHENTICATED") return; // the app signs out
      this.#renderLoadError(error);
      return;
    }
    if (this.destroyed) return;
    if (!data.project) {
      this.#renderNotFound();
      return;
    }
    this.project = data.project;
    // Repository and environments are final once the project is ACTIVE.
    this.detailsCurrent = this.project.status === "ACTIVE";
    this.#sampleStatusClock(this.project.initialization);
    const fresh = this.#buildPage();
    // Fill everything before it enters the document: the first paint is the snapshot.
    this.#applyStatus(this.project.initialization, { live: false });
    this.#mountPage(fresh);
    this.#announceLoaded();
    this.unwatchSocket = this.ctx.ws.onStateChange((snap) => this.#socketChanged(snap));
  }

  #renderLoadError(error) {
    const retry = h(
      "button",
      { type: "button", class: "button", onclick: () => this.#reload() },
      "Try again",
    );
    this.#replacePage(
      "Couldn't load this project",
      h(
        "section",
        { class: "card notice notice--error" },
        h(
          "p",
          { role: "alert" },
          error.network
            ? "The server could not be reached. Your project is not affected — its initialization continues on the server."
            : error.message,
        ),
        h("div", { class: "actions" }, retry),
      ),
    );
  }

  #reload() {
    this.#renderShell();
    focusElement(this.shell.heading);
    this.#load();
  }

  #renderNotFound() {
    this.notFound = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.status = null;
    this.refs = null;
    this.ctx.banner.hide();
    this.#replacePage(
      "Project not found",
      h(
        "section",
        { class: "card notice" },
        h(
          "p",
          {},
          "There is no project with this address in your account. It may belong to another user, or the link may be incomplete.",
        ),
        h("p", {}, h("a", { href: "/", class: "button" }, "Back to your projects")),
      ),
    );
  }

  /** Replace whatever the page shows by a heading and one panel (keeps focus on the h1). */
  #replacePage(title, panel) {
    this.ctx.setTitle(title);
    const hadFocus =
      this.root.contains(document.activeElement) && document.activeElement !== this.root;
    const heading = h("h1", { tabindex: "-1", class: "page-title" }, title);
    replaceChildren(
      this.root,
      h("p", { class: "breadcrumb" }, h("a", { href: "/" }, "← Projects")),
      heading,
      panel,
    );
    this.shell = { heading, body: panel };
    if (hadFocus) focusElement(heading);
  }

  #sampleHttpClock() {
    const date = this.ctx.api.lastServerDate;
    if (date) this.clock.sample(date.server, date.local);
  }

  #sampleStatusClock(status, receivedAt = Date.now()) {
    for (const step of status?.steps ?? []) {
      if (step.status === "RUNNING" && step.startedAt && Number.isFinite(step.durationMs)) {
        this.clock.sample(parseTime(step.startedAt) + step.durationMs, receivedAt);
      }
    }
    this.clock.sampleIso(status?.updatedAt, receivedAt);
  }

  // -- the page ------------------------------------------------------------------------------

  #buildPage() {
    const p = this.project;
    const heading = h("h1", { tabindex: "-1", class: "page-title" }, p.name);
    const badgeSlot = h("span", { class: "title-badge" });
    const meta = h(
      "p",
      { class: "page-meta" },
      `Template ${p.template} · created ${formatDate(p.createdAt)} · `,
      h("code", { class: "muted-code" }, p.slug),
    );

    const statusHeading = h("h2", {
      id: "status-heading",
      tabindex: "-1",
      class: "status-heading",
    });
    const statusIcon = h("span", { class: "status-icon", "aria-hidden": "true" });
    const percentText = h("span", { class: "percent", "aria-hidden": "true" });
    const summary = h("p", { class: "step-summary", id: "step-summary" });
    const fill = h("div", { class: "bar-fill" });
    const bar = h(
      "div",
      {
        class: "bar",
        role: "progressbar",
        "aria-label": "Initialization progress",
        "aria-valuemin": "0",
        "aria-valuemax": "100",
      },
      fill,
    );
    const note = h("p", { class: "status-note", id: "status-note" });

    const alertBox = h("div", { role: "alert", class: "failure-alert" });
    const detailsBody = h("dl", { class: "details-list" });
    const copyDetails = h(
      "button",
      { type: "button", class: "button button--small button--quiet" },
      "Copy error details",
    );
    const details = h(
      "details",
      { class: "failure-details", hidden: true },
      h("summary", {}, "Technical details"),
      detailsBody,
      copyDetails,
    );
    const retry = h(
      "button",
      { type: "button", class: "button button--primary", hidden: true },
      "Retry",
    );
    const failure = h(
      "div",
      { class: "failure" },
      alertBox,
      details,
      h("div", { class: "actions" }, retry),
    );

    const cancel = h(
      "button",
      { type: "button", class: "button button--danger-quiet", hidden: true },
      "Cancel initialization",
    );
    const resume = h(
      "button",
      { type: "button", class: "button button--primary", hidden: true },
      "Resume initialization",
    );
    const notifyButton = h(
      "button",
      { type: "button", class: "button button--quiet", hidden: true, "aria-pressed": "false" },
      "Notify me when done",
    );
    const actionError = h("p", { class: "action-error", role: "alert" });
    const actions = h("div", { class: "actions actions--card" }, resume, cancel, notifyButton);

    const steps = h("ol", { class: "steps", "aria-label": "Initialization steps" });
    const card = h(
      "section",
      { class: "card progress-card", "aria-labelledby": "status-heading", "aria-busy": "false" },
      h("div", { class: "status-head" }, statusIcon, statusHeading, percentText),
      summary,
      bar,
      note,
      failure,
      steps,
      actionError,
      actions,
    );
    const doneCard = h("section", {
      class: "card done-card",
      "aria-labelledby": "repo-heading",
      hidden: true,
    });

    const dialog = this.#cancelDialog();

    this.refs = {
      heading,
      badgeSlot,
      statusHeading,
      statusIcon,
      percentText,
      summary,
      bar,
      fill,
      note,
      alertBox,
      details,
      detailsBody,
      copyDetails,
      retry,
      failure,
      cancel,
      resume,
      notifyButton,
      actionError,
      steps,
      card,
      doneCard,
      dialog,
      stepEls: new Map(),
      doneKey: null,
    };

    retry.addEventListener("click", () => this.#retry());
    resume.addEventListener("click", () => this.#retry());
    cancel.addEventListener("click", () => this.#askCancel());
    notifyButton.addEventListener("click", () => this.#enableNotifications());
    copyDetails.addEventListener("click", async () => {
      const ok = await copyText(this.#errorDetailsText());
      this.ctx.announce(ok ? "Error details copied." : "Copying failed; select the text instead.");
    });

    const header = h("div", { class: "page-header" }, heading, badgeSlot);
    return [
      h("p", { class: "breadcrumb" }, h("a", { href: "/" }, "← Projects")),
      header,
      meta,
      card,
      doneCard,
      dialog,
    ];
  }

  #mountPage(fresh) {
    const hadFocus = document.activeElement === this.shell.heading;
    replaceChildren(this.root, ...fresh);
    if (hadFocus) focusElement(this.refs.heading);
  }

  #cancelDialog() {
    const confirm = h(
      "button",
      { type: "button", class: "button button--danger" },
      "Cancel initialization",
    );
    const keep = h(
      "button",
      { type: "button", class: "button", dataset: { role: "keep" } },
      "Keep going",
    );
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": "cancel-title", "aria-describedby": "cancel-text" },
      h("h2", { id: "cancel-title" }, "Cancel initialization?"),
      h(
        "p",
        { id: "cancel-text" },
        "The running step stops. Steps that already completed keep their results (nothing is rolled back), and you can resume later from where it stopped.",
      ),
      h("div", { class: "actions" }, keep, confirm),
    );
    keep.addEventListener("click", () => dialog.close("keep"));
    confirm.addEventListener("click", () => {
      dialog.close("cancel");
      this.#cancel();
    });
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "cancel" || !this.refs) return;
      if (!this.refs.cancel.hidden) this.refs.cancel.focus();
      else focusElement(this.refs.statusHeading);
    });
    return dialog;
  }

  // -- status --------------------------------------------------------------------------------

  #applyStatus(status, { live, event = null }) {
    if (!status || this.notFound || this.destroyed) return;
    if (this.status && status.seq < this.status.seq) return; // older than what is shown
    const previous = this.status;
    if (
      event?.type === "INITIALIZATION_RETRIED" ||
      (previous && TERMINAL.has(previous.status) && status.status === "INITIALIZING")
    ) {
      this.floor = 0;
    }
    this.status = status;
    this.seq = Math.max(this.seq, status.seq);
    this.#render(status);
    if (live) this.#maybeAnnounce();
    if (previous && previous.status !== status.status)
      this.#terminalChanged(previous, status, live);
    if (status.status === "INITIALIZING") this.#startLive();
    if (status.status === "ACTIVE" && !this.detailsCurrent) this.#fetchDetails();
  }

  #terminalChanged(previous, status, live) {
    if (!live) return;
    if (document.visibilityState === "hidden") {
      if (status.status === "ACTIVE") this.attention = "done";
      if (status.status === "FAILED") this.attention = "failed";
      this.#notifyDone(status);
    }
    this.#updateTitle();
  }

  async #fetchDetails() {
    if (this.fetchingDetails) return;
    this.fetchingDetails = true;
    try {
      const data = await this.ctx.api.request(DETAILS_QUERY, { id: this.projectId });
      if (this.destroyed || !data.project) return;
      this.project.environments = data.project.environments;
      this.project.repository = data.project.repository;
      this.detailsCurrent = data.project.status === "ACTIVE";
      this.#render(this.status);
    } catch {
      // The done card says the details are loading; try again shortly.
      setTimeout(() => {
        if (!this.destroyed && !this.detailsCurrent) this.#fetchDetails();
      }, 3_000);
    } finally {
      this.fetchingDetails = false;
    }
  }

  // -- live stream ---------------------------------------------------------------------------

  #startLive() {
    if (this.unsubscribe || this.destroyed) return;
    clearTimeout(this.liveRetryTimer);
    this.unsubscribe = this.ctx.ws.subscribe({
      query: PROGRESS_SUBSCRIPTION,
      variables: () => ({ id: this.projectId, afterSeq: Math.max(0, this.seq) }),
      next: (payload) => this.#onEvent(payload),
      error: (errors) => this.#onStreamError(errors),
      complete: () => this.#onStreamComplete(),
    });
  }

  #onEvent(payload) {
    if (payload.errors?.length) {
      this.#onStreamError(payload.errors);
      return;
    }
    const event = payload.data?.initProgress;
    if (!event) return;
    const receivedAt = Date.now();
    this.lastHeard = receivedAt;
    this.clock.sampleIso(event.at, receivedAt);
    this.liveFailures = 0;
    if (event.seq <= this.seq && event.type !== "SNAPSHOT") return; // already applied
    this.#applyStatus(
      { ...event.status, seq: Math.max(event.seq, event.status.seq) },
      { live: true, event },
    );
  }

  #onStreamComplete() {
    this.unsubscribe = null;
    if (this.destroyed) return;
    // The server completes the stream after the terminal event. If it ended early, or a
    // retry elsewhere already restarted the run, read the truth and listen again.
    if (!this.status || !TERMINAL.has(this.status.status)) this.#refreshStatus(true);
  }

  #onStreamError(errors) {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.destroyed) return;
    const code = errors?.[0]?.extensions?.code;
    if (code === "NOT_FOUND") {
      this.#renderNotFound();
      return;
    }
    if (code === "UNAUTHENTICATED") {
      this.ctx.onUnauthenticated();
      return;
    }
    this.#refreshStatus(true);
  }

  /** Read projectStatus over HTTP; apply it if newer; listen again if still running. */
  async #refreshStatus(backoff = false) {
    if (backoff) {
      const delay = Math.min(15_000, 500 * 2 ** this.liveFailures) * (0.5 + Math.random() / 2);
      this.liveFailures += 1;
      clearTimeout(this.liveRetryTimer);
      await new Promise((resolve) => {
        this.liveRetryTimer = setTimeout(resolve, delay);
      });
      if (this.destroyed) return;
    }
    try {
      const data = await this.ctx.api.request(STATUS_QUERY, { id: this.projectId });
      this.#sampleHttpClock();
      if (this.destroyed) return;
      this.#sampleStatusClock(data.projectStatus);
      this.#applyStatus(data.projectStatus, { live: true });
      if (data.projectStatus.status === "INITIALIZING") this.#startLive();
    } catch (error) {
      if (this.destroyed) return;
      if (error.code === "NOT_FOUND") this.#renderNotFound();
      else if (error.code !== "UNAUTHENTICATED") this.#refreshStatus(true);
    }
  }

  #socketChanged(snap) {
    const wasLost = this.socketState.state === "reconnecting";
    this.socketState = snap;
    if (snap.state === "open" && wasLost) {
      this.ctx.announce("Connection restored. Progress is up to date.");
    }
    this.#renderBanner();
  }

  #renderBanner() {
    const { state, lostSince } = this.socketState;
    const lost = state === "reconnecting" && this.unsubscribe !== null;
    if (!lost) {
      clearTimeout(this.bannerTimer);
      this.bannerTimer = null;
      this.ctx.banner.hide();
      this.#render(this.status);
      return;
    }
    const since = lostSince ?? Date.now();
    const shownFor = Date.now() - since;
    if (shownFor < BANNER_DELAY_MS) {
      if (!this.bannerTimer) {
        this.bannerTimer = setTimeout(() => {
          this.bannerTimer = null;
          this.#renderBanner();
        }, BANNER_DELAY_MS - shownFor);
      }
      return;
    }
    const escalated = shownFor >= ESCALATE_AFTER_MS;
    this.ctx.banner.show({
      escalated,
      text: escalated
        ? "Still can't reach the server. The progress below may be out of date — initialization itself continues on the server."
        : "Connection lost — reconnecting…",
      onRetry: () => this.ctx.ws.retryNow(),
    });
    this.#render(this.status);
  }

  #visibilityChanged() {
    if (document.visibilityState !== "visible") {
      this.#updateTitle();
      return;
    }
    this.attention = null;
    this.ctx.setFavicon(null);
    this.#updateTitle();
    // Another tab (or the CLI) may have retried a failed or canceled run.
    if (
      this.status &&
      (this.status.status === "FAILED" || this.status.status === "CANCELED") &&
      !this.busy.retry
    ) {
      this.#refreshStatus(false);
    }
  }

  #tick() {
    if (!this.status || !this.refs) return;
    this.#render(this.status);
    this.#maybeAnnounce();
    if (this.socketState.state === "reconnecting" && this.unsubscribe) this.#renderBanner();
    const quiet = Date.now() - this.lastHeard;
    if (
      this.status.status === "INITIALIZING" &&
      this.socketState.state === "open" &&
      this.unsubscribe &&
      quiet >= QUIET_RECHECK_MS &&
      !this.rechecking
    ) {
      this.rechecking = true;
      this.lastHeard = Date.now();
      this.#refreshStatus(false).finally(() => {
        this.rechecking = false;
      });
    }
  }

  // -- actions -------------------------------------------------------------------------------

  async #retry() {
    if (this.busy.retry) return; // a double click sends one request
    const status = this.status;
    const restarted =
      status.steps.find((s) => s.status === "FAILED")?.name ??
      status.currentStep?.name ??
      status.steps.find((s) => s.status === "PENDING")?.name;
    this.busy.retry = true;
    this.actionError = "";
    this.#render(this.status);
    try {
      const data = await this.ctx.api.request(RETRY_MUTATION, { id: this.projectId });
      const payload = data.retryInitialization;
      if (payload.userErrors.length) {
        this.actionError = payload.userErrors.map((e) => e.message).join(" ");
        await this.#refreshStatus(false);
        return;
      }
      this.#sampleHttpClock();
      this.busy.retry = false;
      this.#moveFocusBeforeHide(restarted);
      this.#applyStatus(payload.status, { live: true });
      this.ctx.announce(`Retrying from ${this.#stepTitle(restarted)}.`);
    } catch (error) {
      if (error.code === "UNAUTHENTICATED") return;
      this.actionError = `Retry did not go through: ${error.message}`;
    } finally {
      this.busy.retry = false;
      if (!this.destroyed) this.#render(this.status);
    }
  }

  #moveFocusBeforeHide(stepName) {
    const active = document.activeElement;
    const losing =
      active === this.refs.retry ||
      active === this.refs.resume ||
      active === document.body ||
      !active;
    if (!losing) return;
    const li = stepName ? this.refs.stepEls.get(stepName)?.li : null;
    focusElement(li ?? this.refs.statusHeading);
  }

  #askCancel() {
    if (this.busy.cancel) return;
    this.refs.dialog.returnValue = "";
    this.refs.dialog.showModal();
    // The safe choice has focus: Enter or Space by reflex keeps the run going.
    this.refs.dialog.querySelector("[data-role=keep]")?.focus();
  }

  async #cancel() {
    if (this.busy.cancel) return;
    this.busy.cancel = true;
    this.actionError = "";
    this.#render(this.status);
    try {
      const data = await this.ctx.api.request(CANCEL_MUTATION, { id: this.projectId });
      const payload = data.cancelInitialization;
      if (payload.userErrors.length) {
        this.actionError = payload.userErrors.map((e) => e.message).join(" ");
        await this.#refreshStatus(false);
        return;
      }
      this.busy.cancel = false;
      focusElement(this.refs.statusHeading);
      this.#applyStatus(payload.status, { live: true });
    } catch (error) {
      if (error.code === "UNAUTHENTICATED") return;
      this.actionError = `Cancel did not go through: ${error.message}`;
    } finally {
      this.busy.cancel = false;
      if (!this.destroyed) this.#render(this.status);
    }
  }

  async #enableNotifications() {
    if (!("Notification" in window)) return;
    if (this.notify) {
      this.notify = false;
    } else {
      const permission = await Notification.requestPermission();
      this.notify = permission === "granted";
      if (!this.notify) this.ctx.announce("Notifications are blocked for this site.");
    }
    this.#render(this.status);
  }

  #notifyDone(status) {
    if (!this.notify || !("Notification" in window) || Notification.permission !== "granted")
      return;
    const title =
      status.status === "ACTIVE"
        ? `✓ ${this.project.name} is ready`
        : `✕ Setup of ${this.project.name} failed`;
    try {
      new Notification(title, {
        body: status.error ?? "Open the page for details.",
        tag: this.projectId,
      });
    } catch {
      /* some platforms only allow notifications from a service worker */
    }
  }

  // -- announcements -------------------------------------------------------------------------

  #announceLoaded() {
    const s = this.status;
    const view = describe(s, this.clock.now());
    if (s.status === "INITIALIZING") {
      this.ctx.announce(`${view.summary}. ${this.#percent(s)}% complete.`);
    }
    this.announced = {
      key: announceKey(s, view),
      status: s,
      percent: this.#percent(s),
      progressAt: Date.now(),
    };
    this.#updateTitle();
  }

  /**
   * One message per transition ("Render template done. Create environments… (step 3 of 7)"),
   * compared with what was last *announced*, so the instant between two steps is not a
   * transition of its own; plain percent at most once per PROGRESS_ANNOUNCE_MS.
   */
  #maybeAnnounce() {
    const status = this.status;
    if (!status || !this.announced.status) return;
    const view = describe(status, this.clock.now());
    const key = announceKey(status, view);
    if (key === null) return;
    const now = Date.now();
    if (key !== this.announced.key) {
      const message = transitionMessage(this.announced.status, status, view, this.project.name);
      this.announced = { key, status, progressAt: now, percent: this.#percent(status) };
      if (message) this.ctx.announce(message);
      return;
    }
    const percent = this.#percent(status);
    if (
      status.status === "INITIALIZING" &&
      percent !== this.announced.percent &&
      now - this.announced.progressAt >= PROGRESS_ANNOUNCE_MS
    ) {
      this.announced.progressAt = now;
      this.announced.percent = percent;
      this.ctx.announce(`${percent}% complete.`);
    }
  }

  // -- rendering -----------------------------------------------------------------------------

  #percent(status) {
    if (status.status === "ACTIVE") return 100;
    return Math.max(this.floor, Math.min(99, status.progress));
  }

  #stepTitle(name) {
    return this.status?.steps.find((s) => s.name === name)?.title ?? "the failed step";
  }

  #render(status) {
    if (!status || !this.refs) return;
    const r = this.refs;
    const now = this.clock.now();
    const view = describe(status, now);
    const connectionLost = this.socketState.state === "reconnecting" && this.unsubscribe !== null;
    const percent = this.#percent(status);
    this.floor =
      status.status === "INITIALIZING" || status.status === "FAILED" ? percent : this.floor;

    setAttr(r.card, "data-state", view.pageState);
    setAttr(r.card, "data-seq", String(status.seq));
    replaceIfChanged(r.badgeSlot, `${status.status}`, () => stateBadge(status.status));

    setText(r.statusHeading, view.heading);
    setText(r.statusIcon, view.headingIcon);
    setAttr(r.statusIcon, "data-kind", view.pageState);
    setText(r.percentText, `${percent}%`);
    setText(r.summary, view.summary);
    setAttr(r.bar, "aria-valuenow", String(percent));
    setAttr(r.bar, "aria-valuetext", view.valueText);
    setAttr(r.bar, "data-state", view.pageState);
    if (r.fill.style.width !== `${percent}%`) r.fill.style.width = `${percent}%`;

    // The note under the bar: queued time, retry countdown, stall, outcome.
    let note = view.note;
    if (view.stalledStep && connectionLost) note = "";
    // Always present (an empty line when there is nothing to say): no layout shift when a
    // note comes or goes.
    setText(r.note, note);
    setAttr(r.note, "data-kind", view.noteKind);

    // Failure: role=alert text, technical details, Retry.
    const failed = status.status === "FAILED";
    const failedStep = status.steps.find((s) => s.status === "FAILED");
    setAttr(r.failure, "data-visible", failed ? "true" : null);
    if (failed) {
      const title = failedStep ? `${failedStep.title} failed` : "Initialization failed";
      const human = failedStep?.error?.message ?? status.error ?? "The step stopped with an error.";
      const key = `${title}|${human}`;
      if (r.alertBox.dataset.key !== key) {
        r.alertBox.dataset.key = key;
        replaceChildren(
          r.alertBox,
          h(
            "h3",
            { class: "failure-title" },
            h("span", { class: "failure-icon", "aria-hidden": "true" }, "✕"),
            title,
          ),
          h("p", { class: "failure-message" }, human),
        );
      }
      const detailKey = JSON.stringify([failedStep?.error, failedStep?.attempts, status.seq]);
      if (r.detailsBody.dataset.key !== detailKey) {
        r.detailsBody.dataset.key = detailKey;
        replaceChildren(
          r.detailsBody,
          ...this.#errorDetails(status, failedStep).flatMap(([k, v]) => [
            h("dt", {}, k),
            h("dd", {}, h("code", {}, v)),
          ]),
        );
      }
    } else if (r.alertBox.childNodes.length) {
      r.alertBox.dataset.key = "";
      r.alertBox.replaceChildren();
    }
    this.#show(r.details, failed);
    this.#show(r.retry, failed);
    this.#busyButton(r.retry, this.busy.retry, "Retry", "Retrying…");

    this.#show(r.cancel, status.status === "INITIALIZING");
    // Finished while the user was deciding whether to cancel: nothing left to cancel.
    if (status.status !== "INITIALIZING" && r.dialog.open) r.dialog.close("finished");
    this.#busyButton(r.cancel, this.busy.cancel, "Cancel initialization", "Canceling…");
    this.#show(r.resume, status.status === "CANCELED");
    this.#busyButton(r.resume, this.busy.retry, "Resume initialization", "Resuming…");
    const canNotify = "Notification" in window && Notification.permission !== "denied";
    this.#show(r.notifyButton, status.status === "INITIALIZING" && canNotify);
    setAttr(r.notifyButton, "aria-pressed", this.notify ? "true" : "false");
    setText(r.notifyButton, this.notify ? "Will notify when done" : "Notify me when done");
    setText(r.actionError, this.actionError);

    this.#renderSteps(status, view, now, connectionLost);
    this.#renderDone(status);
    this.#updateTitle();
  }

  #show(el, visible) {
    if (!visible && !el.hidden && el.contains(document.activeElement)) {
      // Never drop focus on <body> when the focused control goes away.
      focusElement(this.refs.statusHeading);
    }
    setAttr(el, "hidden", visible ? null : true);
  }

  #busyButton(button, busy, idle, working) {
    setAttr(button, "aria-disabled", busy ? "true" : null);
    setAttr(button, "aria-busy", busy ? "true" : null);
    setText(button, busy ? working : idle);
  }

  #renderSteps(status, view, now, connectionLost) {
    const r = this.refs;
    const ordered = [...status.steps].sort((a, b) => a.position - b.position);
    const seen = new Set();
    ordered.forEach((step, index) => {
      seen.add(step.name);
      let el = r.stepEls.get(step.name);
      if (!el) {
        el = buildStepRow();
        r.stepEls.set(step.name, el);
      }
      if (r.steps.children[index] !== el.li)
        r.steps.insertBefore(el.li, r.steps.children[index] ?? null);
      const kind = stepKind(step, status, view, now, connectionLost);
      const look = STEP_LOOK[kind];
      setAttr(el.li, "data-step", step.name);
      setAttr(el.li, "data-state", kind);
      setAttr(el.li, "class", `step step--${kind}`);
      setAttr(el.li, "aria-current", view.current?.name === step.name ? "step" : null);
      setAttr(el.li, "tabindex", "-1");
      setText(el.title, step.title);
      setText(el.state, look.word);
      if (kind === "running") {
        if (!el.icon.querySelector(".spinner"))
          replaceChildren(el.icon, h("span", { class: "spinner" }));
      } else if (el.icon.textContent !== look.icon || el.icon.querySelector(".spinner")) {
        replaceChildren(el.icon, look.icon);
      }
      setAttr(el.icon, "data-kind", kind);
      const detail = stepDetail(step, kind, now, status);
      setText(el.detail, detail.text);
      setAttr(el.detail, "data-kind", detail.kind);
      const time = stepTime(step, kind, now);
      setText(el.timeText, time.text);
      setText(el.timeLabel, time.text ? time.label : "");
      setAttr(el.time, "data-live", kind === "running" || kind === "stalled" ? "true" : null);
    });
    for (const [name, el] of r.stepEls) {
      if (!seen.has(name)) {
        el.li.remove();
        r.stepEls.delete(name);
      }
    }
  }

  #renderDone(status) {
    const r = this.refs;
    const active = status.status === "ACTIVE";
    setAttr(r.doneCard, "hidden", active ? null : true);
    if (!active) return;
    const p = this.project;
    const repo = p.repository;
    const key = JSON.stringify([repo, p.environments]);
    if (r.doneKey === key) return;
    r.doneKey = key;
    const children = [h("h2", { id: "repo-heading" }, "Repository")];
    if (repo) {
      const command = `git -c http.extraHeader="Authorization: Bearer $INITFLOW_TOKEN" clone ${repo.cloneUrl} ${p.slug}`;
      const copy = h("button", { type: "button", class: "button button--small" }, "Copy command");
      copy.addEventListener("click", async () => {
        const ok = await copyText(command);
        setText(copy, ok ? "Copied" : "Copy failed");
        this.ctx.announce(
          ok ? "Clone command copied." : "Copying failed; select the command instead.",
        );
        setTimeout(() => setText(copy, "Copy command"), 2000);
      });
      children.push(
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Clone URL"),
          h("dd", {}, h("code", {}, repo.cloneUrl)),
          h("dt", {}, "Default branch"),
          h("dd", {}, h("code", {}, repo.defaultBranch)),
          repo.headCommit
            ? [
                h("dt", {}, "Head commit"),
                h("dd", {}, h("code", { title: repo.headCommit }, repo.headCommit.slice(0, 12))),
              ]
            : null,
        ),
        h(
          "p",
          { class: "hint", id: "clone-hint" },
          "The repository needs your API token. With the token in INITFLOW_TOKEN:",
        ),
        h(
          "div",
          { class: "command" },
          h(
            "pre",
            { "aria-describedby": "clone-hint" },
            h("code", { class: "clone-command" }, command),
          ),
          copy,
        ),
      );
    } else {
      children.push(h("p", { class: "hint" }, "Loading repository details…"));
    }
    children.push(h("h2", {}, "Environments"));
    const envs = p.environments ?? [];
    children.push(
      envs.length
        ? h(
            "ul",
            { class: "chips", "aria-label": "Environments" },
            envs.map((e) => h("li", { class: "chip" }, e.name)),
          )
        : h("p", { class: "hint" }, "No environments."),
    );
    replaceChildren(r.doneCard, ...children);
  }

  #errorDetails(status, failedStep) {
    const rows = [];
    if (failedStep?.error) rows.push(["Error code", failedStep.error.code]);
    if (failedStep)
      rows.push([
        "Step",
        `${failedStep.name} (${failedStep.position + 1} of ${status.steps.length})`,
      ]);
    if (failedStep) rows.push(["Attempts", String(failedStep.attempts)]);
    if (failedStep?.completedAt)
      rows.push(["Failed at", new Date(parseTime(failedStep.completedAt)).toISOString()]);
    else rows.push(["Reported at", new Date(parseTime(status.updatedAt)).toISOString()]);
    rows.push(["Project ID", this.projectId]);
    rows.push(["Event", `#${status.seq}`]);
    if (status.error) rows.push(["Message", status.error]);
    return rows;
  }

  #errorDetailsText() {
    const status = this.status;
    const failedStep = status?.steps.find((s) => s.status === "FAILED");
    return this.#errorDetails(status, failedStep)
      .map(([k, v]) => `${k}: ${v}`)
      .join("\n");
  }

  #updateTitle() {
    if (!this.project) return;
    const name = this.project.name;
    const s = this.status;
    if (this.attention === "done") {
      this.ctx.setTitle(`✓ Project ready — ${name}`, true);
      this.ctx.setFavicon("done");
    } else if (this.attention === "failed") {
      this.ctx.setTitle(`✕ Setup failed — ${name}`, true);
      this.ctx.setFavicon("failed");
    } else if (s && s.status === "INITIALIZING" && document.visibilityState === "hidden") {
      this.ctx.setTitle(`${this.#percent(s)}% · ${name}`);
    } else {
      this.ctx.setTitle(name);
    }
  }
}

// -- pure helpers ------------------------------------------------------------------------------

function replaceIfChanged(slot, key, build) {
  if (slot.dataset.key === key) return;
  slot.dataset.key = key;
  replaceChildren(slot, build());
}

function buildStepRow() {
  const icon = h("span", { class: "step-icon", "aria-hidden": "true" });
  const title = h("span", { class: "step-title" });
  const state = h("span", { class: "step-state" });
  const detail = h("span", { class: "step-detail" });
  const timeLabel = h("span", { class: "visually-hidden" });
  const timeText = h("span", { class: "step-time-text" });
  const time = h("span", { class: "step-time" }, timeLabel, timeText);
  const li = h(
    "li",
    { class: "step" },
    icon,
    h(
      "span",
      { class: "step-body" },
      h(
        "span",
        { class: "step-line" },
        title,
        h("span", { class: "visually-hidden" }, ": "),
        state,
      ),
      detail,
    ),
    time,
  );
  return { li, icon, title, state, detail, time, timeText, timeLabel };
}
