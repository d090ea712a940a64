// "Create project": template picker, the template's declared parameters as typed inputs,
// environments, and the server's userErrors mapped onto the fields they name.
//
// Each submission carries an idempotency key: a double submit (or a retry after a lost
// response) returns the same project. The key changes only after the server has answered
// with userErrors, i.e. when nothing was created and the user will submit something new.

import { h, replaceChildren, setAttr, setText, focusElement, randomId } from "./dom.js";
import { humanize } from "./format.js";

const TEMPLATES_QUERY = `query DashboardTemplates {
  templates { name title description parameters { name type required default description } }
}`;

const CREATE_MUTATION = `mutation DashboardCreateProject($input: CreateProjectInput!) {
  createProject(input: $input) {
    project { id name }
    userErrors { field message code }
  }
}`;

const DEFAULT_ENVIRONMENTS = "development, staging, production";

export function mountCreateForm(root, ctx) {
  ctx.setTitle("Create project");
  let destroyed = false;
  let templates = [];
  let idempotencyKey = randomId();
  let submitting = false;
  const fields = new Map(); // error key ("name", "parameters.port", …) -> { input, error, container }

  const heading = h("h1", { tabindex: "-1", class: "page-title" }, "Create project");
  const summary = h("div", { class: "error-summary", tabindex: "-1", role: "alert", hidden: true });
  const body = h("div", {}, h("p", { class: "hint", "aria-busy": "true" }, "Loading templates…"));
  replaceChildren(
    root,
    h("p", { class: "breadcrumb" }, h("a", { href: "/" }, "← Projects")),
    heading,
    summary,
    body,
  );

  async function loadTemplates() {
    try {
      const data = await ctx.api.request(TEMPLATES_QUERY);
      if (destroyed) return;
      templates = data.templates;
      renderForm();
    } catch (error) {
      if (destroyed || error.code === "UNAUTHENTICATED") return;
      replaceChildren(
        body,
        h(
          "div",
          { class: "notice notice--error", role: "alert" },
          h(
            "p",
            {},
            error.network ? "Couldn't reach the server to load the templates." : error.message,
          ),
          h(
            "button",
            { type: "button", class: "button", onclick: () => loadTemplates() },
            "Try again",
          ),
        ),
      );
    }
  }

  function field({ key, id, label, hint, input, required = false }) {
    const error = h("p", { class: "field-error", id: `${id}-error` });
    const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
    setAttr(input, "id", id);
    setAttr(
      input,
      "aria-describedby",
      [hintEl ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "),
    );
    if (required) setAttr(input, "aria-required", "true");
    const isCheckbox = input.type === "checkbox";
    const labelEl = h(
      "label",
      { for: id },
      label,
      required ? h("span", { class: "required" }, " (required)") : null,
    );
    const container = isCheckbox
      ? h(
          "div",
          { class: "field field--checkbox" },
          h("div", { class: "checkbox-row" }, input, labelEl),
          hintEl,
          error,
        )
      : h("div", { class: "field" }, labelEl, hintEl, input, error);
    fields.set(key, { input, error, container, label: typeof label === "string" ? label : id });
    return container;
  }

  let paramsFieldset = null;
  let templateFieldset = null;
  let submitButton = null;
  let formError = null;

  function renderForm() {
    fields.clear();
    const nameInput = h("input", {
      type: "text",
      name: "name",
      autocomplete: "off",
      maxlength: "100",
    });
    const envInput = h("input", {
      type: "text",
      name: "environments",
      autocomplete: "off",
      spellcheck: "false",
    });
    envInput.value = DEFAULT_ENVIRONMENTS;

    const radios = templates.map((template, index) => {
      const id = `template-${template.name}`;
      const radio = h("input", {
        type: "radio",
        name: "template",
        id,
        value: template.name,
        checked: index === 0,
      });
      radio.addEventListener("change", () => renderParameters());
      return h(
        "div",
        { class: "choice" },
        radio,
        h(
          "label",
          { for: id },
          h("span", { class: "choice-title" }, template.title),
          h("span", { class: "choice-name" }, template.name),
          template.description
            ? h("span", { class: "choice-description" }, template.description)
            : null,
        ),
      );
    });
    const templateError = h("p", { class: "field-error", id: "template-error" });
    templateFieldset = h(
      "fieldset",
      { class: "field choices", id: "f-template", "aria-describedby": "template-error" },
      h("legend", {}, "Template"),
      radios.length ? radios : h("p", { class: "hint" }, "No templates are installed."),
      templateError,
    );
    fields.set("template", {
      input: templateFieldset,
      error: templateError,
      container: templateFieldset,
      label: "Template",
    });

    paramsFieldset = h("fieldset", { class: "field params", id: "f-parameters" });
    submitButton = h(
      "button",
      { type: "submit", class: "button button--primary" },
      "Create project",
    );
    formError = h("p", { class: "field-error form-error", role: "alert" });

    const form = h(
      "form",
      { class: "card form", novalidate: true, "aria-labelledby": "create-heading" },
      h("h2", { id: "create-heading", class: "visually-hidden" }, "Project details"),
      field({
        key: "name",
        id: "f-name",
        label: "Project name",
        hint: "Shown in the dashboard; the repository and URL slug are derived from it.",
        input: nameInput,
        required: true,
      }),
      templateFieldset,
      paramsFieldset,
      field({
        key: "environments",
        id: "f-environments",
        label: "Environments",
        hint: "Comma-separated: lowercase letters, digits and “-”. Leave empty for none.",
        input: envInput,
      }),
      formError,
      h(
        "div",
        { class: "actions" },
        submitButton,
        h("a", { href: "/", class: "button button--quiet" }, "Cancel"),
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(form);
    });
    // Editing after the server rejected the input starts a new submission.
    form.addEventListener("input", () => {
      if (form.dataset.rejected === "true") {
        form.dataset.rejected = "false";
        idempotencyKey = randomId();
      }
    });
    replaceChildren(body, form);
    renderParameters();
  }

  function selectedTemplate() {
    const checked = templateFieldset?.querySelector("input[type=radio]:checked");
    return templates.find((t) => t.name === checked?.value) ?? null;
  }

  function renderParameters() {
    for (const key of [...fields.keys()]) if (key.startsWith("parameters.")) fields.delete(key);
    const template = selectedTemplate();
    const params = template?.parameters ?? [];
    const error = h("p", { class: "field-error", id: "parameters-error" });
    fields.set("parameters", {
      input: paramsFieldset,
      error,
      container: paramsFieldset,
      label: "Template parameters",
    });
    setAttr(paramsFieldset, "hidden", params.length ? null : true);
    setAttr(paramsFieldset, "aria-describedby", "parameters-error");
    replaceChildren(
      paramsFieldset,
      h("legend", {}, template ? `${template.title} parameters` : "Template parameters"),
      params.map((param) => parameterField(param)),
      error,
    );
  }

  function parameterField(param) {
    const id = `f-param-${param.name}`;
    const type = String(param.type).toLowerCase();
    let input;
    if (type === "boolean" || type === "bool") {
      input = h("input", { type: "checkbox", name: param.name });
      input.checked = param.default === true;
    } else if (type === "integer" || type === "int" || type === "number" || type === "float") {
      input = h("input", {
        type: "number",
        name: param.name,
        inputmode: type === "integer" || type === "int" ? "numeric" : "decimal",
        step: type === "integer" || type === "int" ? "1" : "any",
      });
      if (param.default !== null && param.default !== undefined)
        input.value = String(param.default);
    } else {
      input = h("input", { type: "text", name: param.name, autocomplete: "off" });
      if (param.default !== null && param.default !== undefined)
        input.value = String(param.default);
    }
    input.dataset.paramType = type;
    return field({
      key: `parameters.${param.name}`,
      id,
      label: humanize(param.name),
      hint: param.description ?? null,
      input,
      required: param.required,
    });
  }

  function clearErrors() {
    for (const { input, error, container } of fields.values()) {
      setText(error, "");
      container.classList.remove("has-error");
      if (input !== container) setAttr(input, "aria-invalid", null);
    }
    setText(formError, "");
    setAttr(summary, "hidden", true);
    summary.replaceChildren();
  }

  function showErrors(errors) {
    const listed = [];
    for (const err of errors) {
      const target = fieldFor(err.field);
      if (target) {
        const previous = target.error.textContent;
        setText(target.error, previous ? `${previous} ${err.message}` : err.message);
        target.container.classList.add("has-error");
        if (target.input !== target.container) setAttr(target.input, "aria-invalid", "true");
        listed.push({ message: err.message, target });
      } else {
        listed.push({ message: err.message, target: null });
      }
    }
    replaceChildren(
      summary,
      h(
        "h2",
        {},
        errors.length === 1 ? "There is a problem" : `There are ${errors.length} problems`,
      ),
      h(
        "ul",
        {},
        listed.map(({ message, target }) =>
          h(
            "li",
            {},
            target
              ? h(
                  "a",
                  {
                    href: `#${target.input.id}`,
                    onclick: (event) => {
                      event.preventDefault();
                      focusField(target);
                    },
                  },
                  message,
                )
              : message,
          ),
        ),
      ),
    );
    setAttr(summary, "hidden", null);
    focusElement(summary);
  }

  function focusField(target) {
    const el = target.input;
    if (el.tagName === "FIELDSET") {
      focusElement(el.querySelector("input:checked") ?? el.querySelector("input") ?? el);
    } else {
      focusElement(el);
    }
  }

  /** Map a userError's field path (["parameters", "port"], ["environments", "0"]) to a field. */
  function fieldFor(path) {
    const parts = (path ?? []).map(String).filter((p) => p !== "input");
    if (!parts.length) return null;
    if (parts[0] === "parameters" && parts[1] && fields.has(`parameters.${parts[1]}`)) {
      return fields.get(`parameters.${parts[1]}`);
    }
    if (parts[0] === "parameters") return fields.get("parameters") ?? null;
    if (parts[0] === "environments") return fields.get("environments") ?? null;
    return fields.get(parts[0]) ?? null;
  }

  function collect() {
    const errors = [];
    const template = selectedTemplate();
    const parameters = {};
    for (const param of template?.parameters ?? []) {
      const entry = fields.get(`parameters.${param.name}`);
      if (!entry) continue;
      const input = entry.input;
      const type = input.dataset.paramType;
      if (input.type === "checkbox") {
        parameters[param.name] = input.checked;
      } else if (input.type === "number") {
        const raw = input.value.trim();
        if (raw === "" && input.validity.badInput) {
          errors.push({
            field: ["parameters", param.name],
            message: `${humanize(param.name)} must be a number.`,
          });
        } else if (raw !== "") {
          const value = Number(raw);
          if (
            !Number.isFinite(value) ||
            ((type === "integer" || type === "int") && !Number.isInteger(value))
          ) {
            errors.push({
              field: ["parameters", param.name],
              message: `${humanize(param.name)} must be a whole number.`,
            });
          } else {
            parameters[param.name] = value;
          }
        }
      } else if (input.value.trim() !== "") {
        parameters[param.name] = input.value;
      }
    }
    const envRaw = fields.get("environments").input.value;
    const environments = envRaw
      .split(/[,\n]+/)
      .map((e) => e.trim())
      .filter(Boolean);
    return {
      errors,
      input: {
        name: fields.get("name").input.value.trim(),
        template: template?.name ?? "",
        parameters,
        environments,
        idempotencyKey,
      },
    };
  }

  async function submit(form) {
    if (submitting) return; // a double submit sends one request
    clearErrors();
    const { errors, input } = collect();
    if (errors.length) {
      showErrors(errors);
      return;
    }
    submitting = true;
    setAttr(submitButton, "aria-disabled", "true");
    setAttr(submitButton, "aria-busy", "true");
    setText(submitButton, "Creating…");
    try {
      const data = await ctx.api.request(CREATE_MUTATION, { input });
      if (destroyed) return;
      const payload = data.createProject;
      if (payload.userErrors.length || !payload.project) {
        form.dataset.rejected = "true";
        idempotencyKey = randomId();
        showErrors(
          payload.userErrors.length
            ? payload.userErrors
            : [{ field: null, message: "The project was not created." }],
        );
        return;
      }
      ctx.announce(`Project ${payload.project.name} created. Initialization has started.`);
      ctx.navigate(`/projects/${encodeURIComponent(payload.project.id)}`);
    } catch (error) {
      if (destroyed || error.code === "UNAUTHENTICATED") return;
      // Same key on the next try: if the request did reach the server, it returns that project.
      setText(
        formError,
        error.network
          ? "Couldn't reach the server. Your input is kept — try again."
          : error.message,
      );
    } finally {
      submitting = false;
      if (!destroyed) {
        setAttr(submitButton, "aria-disabled", null);
        setAttr(submitButton, "aria-busy", null);
        setText(submitButton, "Create project");
      }
    }
  }

  loadTemplates();
  return {
    destroy() {
      destroyed = true;
    },
  };
}
