"use strict";
// Renders /openapi.json as a readable list of operations, with no external assets.

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function table(headings, rows) {
  const t = element("table");
  const head = element("tr");
  headings.forEach((h) => head.append(element("th", h)));
  t.append(head);
  rows.forEach((cells) => {
    const row = element("tr");
    cells.forEach((c) => row.append(element("td", c)));
    t.append(row);
  });
  return t;
}

async function render() {
  const schema = await (await fetch("/openapi.json")).json();
  const root = document.getElementById("api");
  root.replaceChildren();
  const intro = element("section");
  intro.append(element("h2", schema.info.title + " " + schema.info.version), element("p", schema.info.description || ""));
  root.append(intro);
  for (const [path, operations] of Object.entries(schema.paths)) {
    for (const [method, op] of Object.entries(operations)) {
      const section = element("section", undefined, "operation");
      const title = element("h2");
      title.append(element("span", method.toUpperCase(), "method"), element("span", path, "path"));
      section.append(title, element("p", op.summary || ""));
      const parameters = (op.parameters || []).map((p) => [p.name, p.in, p.required ? "yes" : "no",
        (p.schema && (p.schema.type || (p.schema.anyOf || []).map((s) => s.type).join(" | "))) || "", p.description || ""]);
      if (op.requestBody) {
        parameters.push(["(body)", "body", op.requestBody.required ? "yes" : "no",
                         Object.keys(op.requestBody.content).join(", "), op.requestBody.description || ""]);
      }
      if (parameters.length) section.append(table(["Parameter", "In", "Required", "Type", "Description"], parameters));
      section.append(table(["Status", "Meaning"], Object.entries(op.responses).map(([s, r]) => [s, r.description || ""])));
      root.append(section);
    }
  }
}

render().catch((error) => { document.getElementById("api").textContent = "Cannot load the schema: " + error.message; });
