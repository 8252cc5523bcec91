//! `GET /openapi.json` and `GET /docs`: the OpenAPI document, and the same
//! document rendered on the server into one self-contained HTML page (no
//! scripts, styles or fonts from anywhere else: clients may be offline).

use std::fmt::Write;

use axum::{
    http::header,
    response::{Html, IntoResponse, Response},
};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi;
use crate::App;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "documentation",
    operation_id = "getOpenApi",
    summary = "This OpenAPI 3.1 document",
    description = "The description of every operation, parameter, body and error of the service, generated from its code. Needs no key.",
    responses(
        (status = 200, description = "The OpenAPI document.", body = Object, content_type = "application/json"),
    )
)]
async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::json(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/docs",
    tag = "documentation",
    operation_id = "getDocs",
    summary = "API documentation page",
    description = "This document as one self-contained HTML page, readable offline. Needs no key.",
    responses(
        (status = 200, description = "The documentation page.", body = String, content_type = "text/html"),
    )
)]
async fn docs_page() -> Html<&'static str> {
    static PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let doc = serde_json::from_str(openapi::json()).unwrap_or(Node::Null);
        render(&doc)
    });
    Html(&PAGE)
}

/// A JSON value that keeps the order of object members (serde_json's `Value`
/// sorts them), so schemas read in the order they were written.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

static NULL: Node = Node::Null;

impl Node {
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[Node]> {
        match self {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_object(&self) -> Option<&[(String, Node)]> {
        match self {
            Node::Object(members) => Some(members),
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&Node> {
        self.as_object()?
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, node)| node)
    }

    fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    /// A JSON pointer without the leading `/`, e.g. `components/schemas/X`.
    fn pointer(&self, pointer: &str) -> &Node {
        pointer.split('/').fold(self, |node, token| {
            let token = token.replace("~1", "/").replace("~0", "~");
            match node {
                Node::Array(items) => token
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .unwrap_or(&NULL),
                _ => &node[token.as_str()],
            }
        })
    }

    /// The value as compact JSON.
    fn to_json(&self) -> String {
        match self {
            Node::Null => "null".to_owned(),
            Node::Bool(b) => b.to_string(),
            Node::Number(n) => n.to_string(),
            Node::String(s) => serde_json::to_string(s).unwrap_or_default(),
            Node::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Node::to_json)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Node::Object(members) => format!(
                "{{{}}}",
                members
                    .iter()
                    .map(|(k, v)| format!(
                        "{}:{}",
                        serde_json::to_string(k).unwrap_or_default(),
                        v.to_json()
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

impl std::ops::Index<&str> for Node {
    type Output = Node;

    fn index(&self, key: &str) -> &Node {
        self.get(key).unwrap_or(&NULL)
    }
}

impl std::ops::Index<usize> for Node {
    type Output = Node;

    fn index(&self, i: usize) -> &Node {
        self.as_array()
            .and_then(|items| items.get(i))
            .unwrap_or(&NULL)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }

            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }

            fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
                Ok(Node::Bool(b))
            }

            fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
                Ok(Node::Number(n.into()))
            }

            fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
                Ok(Node::Number(n.into()))
            }

            fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
                Ok(serde_json::Number::from_f64(n).map_or(Node::Null, Node::Number))
            }

            fn visit_str<E>(self, s: &str) -> Result<Node, E> {
                Ok(Node::String(s.to_owned()))
            }

            fn visit_string<E>(self, s: String) -> Result<Node, E> {
                Ok(Node::String(s))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Node::Object(members))
            }
        }

        deserializer.deserialize_any(NodeVisitor)
    }
}

const METHODS: [&str; 8] = [
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

const STYLE: &str = r#"
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; --accent:#0b5fb8; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; color:var(--fg); background:#fff; }
header { background:#16325c; color:#fff; padding:24px 40px; }
header h1 { margin:0 0 4px; font-size:28px; }
header .meta { color:#c9d6ea; font-size:14px; }
header a { color:#fff; }
main { max-width:1100px; margin:0 auto; padding:8px 40px 60px; }
h2 { border-bottom:2px solid var(--line); padding-bottom:6px; margin-top:40px; }
h3 { margin:0; font-size:17px; }
h4 { margin:16px 0 6px; font-size:14px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
a { color:var(--accent); text-decoration:none; }
a:hover { text-decoration:underline; }
code { font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:var(--bg); padding:1px 4px; border-radius:4px; }
pre { font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:var(--bg); border:1px solid var(--line); border-radius:6px; padding:10px 12px; white-space:pre-wrap; overflow-wrap:anywhere; margin:6px 0; }
pre a { color:var(--accent); }
.intro p { margin:10px 0; }
nav.toc { columns:2; column-gap:32px; margin:12px 0 0; }
nav.toc div { break-inside:avoid; margin-bottom:10px; }
nav.toc b { display:block; margin-bottom:2px; text-transform:capitalize; }
nav.toc a { display:block; font-size:14px; }
.op { border:1px solid var(--line); border-radius:8px; margin:18px 0; overflow:hidden; }
.op > .head { display:flex; gap:12px; align-items:center; padding:10px 14px; background:var(--bg); border-bottom:1px solid var(--line); flex-wrap:wrap; }
.op > .body { padding:4px 16px 14px; }
.method { display:inline-block; min-width:64px; text-align:center; font:700 12px/1 ui-monospace,Menlo,Consolas,monospace; color:#fff; padding:6px 8px; border-radius:4px; text-transform:uppercase; }
.m-get { background:#1f7a3d; } .m-post { background:#0b5fb8; } .m-patch { background:#a05a00; }
.m-put { background:#6f42c1; } .m-delete { background:#b42318; } .m-head, .m-options, .m-trace { background:#59636e; }
.path { font:600 15px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
.summary { color:var(--muted); }
.lock { margin-left:auto; font-size:12px; color:var(--muted); border:1px solid var(--line); border-radius:10px; padding:2px 8px; background:#fff; }
table { border-collapse:collapse; width:100%; font-size:14px; margin:4px 0; }
th, td { border:1px solid var(--line); padding:6px 8px; text-align:left; vertical-align:top; }
th { background:var(--bg); font-weight:600; }
td.status { font:700 13px ui-monospace,Menlo,Consolas,monospace; white-space:nowrap; }
.s2 { color:#1f7a3d; } .s3 { color:#59636e; } .s4 { color:#a05a00; } .s5 { color:#b42318; }
.req { color:#b42318; font-size:12px; }
.ct { font-size:12px; color:var(--muted); }
a.ref { font:600 13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
details summary { cursor:pointer; font-size:12px; color:var(--muted); margin-top:2px; }
.schema { margin:28px 0; }
.schema h3 { font:600 16px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
footer { color:var(--muted); font-size:13px; margin-top:40px; }
"#;

/// Renders an OpenAPI document (as JSON, in its own key order) into one HTML
/// page.
pub fn render(doc: &Node) -> String {
    let info = &doc["info"];
    let title = info["title"].as_str().unwrap_or("API");
    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>{title}</h1><div class=\"meta\">Version {version} · OpenAPI {oas} · \
         machine-readable: <a href=\"/openapi.json\">/openapi.json</a></div></header>\n<main>\n",
        title = escape(title),
        version = escape(info["version"].as_str().unwrap_or("")),
        oas = escape(doc["openapi"].as_str().unwrap_or("")),
    );
    if let Some(description) = info["description"].as_str() {
        let _ = writeln!(
            out,
            "<section class=\"intro\">{}</section>",
            markdown(description)
        );
    }

    let operations = operations(doc);
    let tags = tag_order(doc, &operations);

    out.push_str("<h2 id=\"operations\">Operations</h2>\n<nav class=\"toc\">\n");
    for (tag, _) in &tags {
        let _ = write!(out, "<div><b>{}</b>", escape(tag));
        for op in operations.iter().filter(|op| op.tag == *tag) {
            let _ = write!(
                out,
                "<a href=\"#{anchor}\"><span class=\"method m-{method}\" style=\"min-width:54px;padding:3px 5px;font-size:10px\">{method}</span> <code>{path}</code></a>",
                anchor = op.anchor(),
                method = op.method,
                path = escape(op.path),
            );
        }
        out.push_str("</div>\n");
    }
    out.push_str("</nav>\n");

    for (tag, description) in &tags {
        let _ = writeln!(
            out,
            "<h2 id=\"tag-{0}\" style=\"text-transform:capitalize\">{0}</h2>",
            escape(tag)
        );
        if !description.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(description));
        }
        for op in operations.iter().filter(|op| op.tag == *tag) {
            render_operation(&mut out, doc, op);
        }
    }

    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        out.push_str("<h2 id=\"schemas\">Schemas</h2>\n");
        for (name, schema) in schemas {
            let _ = write!(
                out,
                "<div class=\"schema\" id=\"schema-{anchor}\"><h3>{name}</h3>",
                anchor = escape(name),
                name = escape(name),
            );
            if let Some(description) = schema["description"].as_str() {
                let _ = write!(out, "<p>{}</p>", inline(description));
            }
            let _ = writeln!(out, "<pre>{}</pre></div>", pretty(schema));
        }
    }
    if let Some(schemes) = doc["components"]["securitySchemes"].as_object() {
        out.push_str("<h2 id=\"security\">Security schemes</h2>\n");
        for (name, scheme) in schemes {
            let _ = writeln!(
                out,
                "<div class=\"schema\"><h3>{}</h3><pre>{}</pre></div>",
                escape(name),
                pretty(scheme)
            );
        }
    }
    out.push_str(
        "<footer>Generated from the service's code; the same document is served as \
         <a href=\"/openapi.json\">/openapi.json</a>.</footer>\n</main>\n</body>\n</html>\n",
    );
    out
}

struct Operation<'a> {
    path: &'a str,
    method: &'a str,
    tag: String,
    op: &'a Node,
}

impl Operation<'_> {
    fn anchor(&self) -> String {
        match self.op["operationId"].as_str() {
            Some(id) => format!("op-{}", escape(id)),
            None => format!(
                "op-{}-{}",
                self.method,
                self.path
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect::<String>()
            ),
        }
    }
}

fn operations(doc: &Node) -> Vec<Operation<'_>> {
    let mut found = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
                    found.push(Operation {
                        path,
                        method,
                        tag,
                        op,
                    });
                }
            }
        }
    }
    found
}

/// Tags in the order the document declares them, then any others.
fn tag_order(doc: &Node, operations: &[Operation]) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tag| {
            Some((
                tag["name"].as_str()?.to_owned(),
                tag["description"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect();
    for op in operations {
        if !tags.iter().any(|(name, _)| *name == op.tag) {
            tags.push((op.tag.clone(), String::new()));
        }
    }
    tags.retain(|(name, _)| operations.iter().any(|op| op.tag == *name));
    tags
}

fn render_operation(out: &mut String, doc: &Node, op: &Operation) {
    let secured = op.op["security"].as_array().is_some_and(|list| {
        list.iter()
            .any(|s| s.as_object().is_some_and(|s| !s.is_empty()))
    });
    let _ = write!(
        out,
        "<section class=\"op\" id=\"{anchor}\"><div class=\"head\"><span class=\"method m-{method}\">{method}</span>\
         <span class=\"path\">{path}</span><span class=\"summary\">{summary}</span>{lock}</div><div class=\"body\">",
        anchor = op.anchor(),
        method = op.method,
        path = escape(op.path),
        summary = escape(op.op["summary"].as_str().unwrap_or("")),
        lock = if secured {
            "<span class=\"lock\" title=\"Authorization: Bearer &lt;key&gt;\">bearer key</span>"
        } else {
            "<span class=\"lock\">no key</span>"
        },
    );
    if let Some(description) = op.op["description"].as_str() {
        out.push_str(&markdown(description));
    }

    let params: Vec<&Node> = op.op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| resolve(doc, p))
        .collect();
    if !params.is_empty() {
        out.push_str(
            "<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Type</th><th>Description</th></tr>",
        );
        for p in params {
            let _ = write!(
                out,
                "<tr><td><code>{name}</code>{req}</td><td>{place}</td><td>{ty}</td><td>{desc}</td></tr>",
                name = escape(p["name"].as_str().unwrap_or("")),
                req = if p["required"].as_bool() == Some(true) {
                    " <span class=\"req\">required</span>"
                } else {
                    ""
                },
                place = escape(p["in"].as_str().unwrap_or("")),
                ty = type_label(&p["schema"]),
                desc = inline(p["description"].as_str().unwrap_or("")),
            );
        }
        out.push_str("</table>");
    }

    let body = resolve(doc, &op.op["requestBody"]);
    if let Some(content) = body["content"].as_object() {
        let _ = write!(
            out,
            "<h4>Request body{}</h4>",
            if body["required"].as_bool() == Some(true) {
                " <span class=\"req\">required</span>"
            } else {
                ""
            }
        );
        if let Some(description) = body["description"].as_str() {
            let _ = write!(out, "<p>{}</p>", inline(description));
        }
        for (content_type, media) in content {
            let _ = write!(out, "<div class=\"ct\">{}</div>", escape(content_type));
            schema_block(out, doc, &media["schema"], true, true);
        }
    }

    if let Some(responses) = op.op["responses"].as_object() {
        out.push_str(
            "<h4>Responses</h4><table><tr><th>Status</th><th>Description</th><th>Body</th></tr>",
        );
        for (status, response) in responses {
            let response = resolve(doc, response);
            let class = format!("s{}", status.chars().next().unwrap_or('0'));
            let _ = write!(
                out,
                "<tr><td class=\"status {class}\">{status}</td><td>{desc}",
                status = escape(status),
                desc = inline(response["description"].as_str().unwrap_or("")),
            );
            if let Some(headers) = response["headers"].as_object() {
                out.push_str("<div class=\"ct\">Headers:");
                for (name, header) in headers {
                    let header = resolve(doc, header);
                    let _ = write!(
                        out,
                        "<br><code>{}</code> {}",
                        escape(name),
                        inline(header["description"].as_str().unwrap_or(""))
                    );
                }
                out.push_str("</div>");
            }
            out.push_str("</td><td>");
            match response["content"].as_object() {
                Some(content) if !content.is_empty() => {
                    for (content_type, media) in content {
                        let _ = write!(out, "<div class=\"ct\">{}</div>", escape(content_type));
                        // Problems look alike everywhere: a link is enough.
                        let expand = !status.starts_with('4') && !status.starts_with('5');
                        schema_block(out, doc, &media["schema"], expand, false);
                    }
                }
                _ => out.push_str("<span class=\"ct\">no body</span>"),
            }
            out.push_str("</td></tr>");
        }
        out.push_str("</table>");
    }
    out.push_str("</div></section>\n");
}

/// A schema: a named one as a link to its definition (and, when `expand`,
/// its definition in a fold below, `open` or closed), an inline one as
/// pretty JSON.
fn schema_block(out: &mut String, doc: &Node, schema: &Node, expand: bool, open: bool) {
    let name = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"));
    match name {
        Some(name) if schema.as_object().is_some_and(|o| o.len() == 1) => {
            let _ = write!(
                out,
                "<a class=\"ref\" href=\"#schema-{0}\">{0}</a>",
                escape(name)
            );
            if expand {
                let _ = write!(
                    out,
                    "<details{}><summary>schema</summary><pre>{}</pre></details>",
                    if open { " open" } else { "" },
                    pretty(resolve(doc, schema))
                );
            }
        }
        _ => {
            let _ = write!(out, "<pre>{}</pre>", pretty(schema));
        }
    }
}

/// Follows a local `$ref` (to a component), once.
fn resolve<'a>(doc: &'a Node, value: &'a Node) -> &'a Node {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix("#/")) {
        Some(pointer) => doc.pointer(pointer),
        None => value,
    }
}

/// A one-line description of a parameter's schema: `integer, 1–200, default 50`.
fn type_label(schema: &Node) -> String {
    if let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    let mut parts = Vec::new();
    let ty = match &schema["type"] {
        Node::String(ty) => ty.clone(),
        Node::Array(types) => types
            .iter()
            .filter_map(Node::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_owned(),
    };
    parts.push(match schema["format"].as_str() {
        Some(format) => format!("{} ({})", escape(&ty), escape(format)),
        None => escape(&ty),
    });
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", escape(&v.to_json().replace('"', ""))))
            .collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    match (&schema["minimum"], &schema["maximum"]) {
        (Node::Number(min), Node::Number(max)) => parts.push(format!("{min}–{max}")),
        (Node::Number(min), _) => parts.push(format!("≥ {min}")),
        (_, Node::Number(max)) => parts.push(format!("≤ {max}")),
        _ => {}
    }
    match (&schema["minLength"], &schema["maxLength"]) {
        (Node::Number(min), Node::Number(max)) => parts.push(format!("{min}–{max} characters")),
        (_, Node::Number(max)) => parts.push(format!("at most {max} characters")),
        _ => {}
    }
    if !schema["default"].is_null() {
        parts.push(format!(
            "default <code>{}</code>",
            escape(&schema["default"].to_json())
        ));
    }
    parts.join(", ")
}

/// Pretty-printed JSON as HTML, with component `$ref`s linked to their
/// schema on this page.
fn pretty(value: &Node) -> String {
    let mut out = String::new();
    pretty_into(&mut out, value, 0);
    out
}

fn pretty_into(out: &mut String, value: &Node, depth: usize) {
    let pad = |depth: usize| "  ".repeat(depth);
    match value {
        Node::Object(map) if map.is_empty() => out.push_str("{}"),
        Node::Array(items) if items.is_empty() => out.push_str("[]"),
        Node::Object(map) => {
            out.push_str("{\n");
            for (i, (key, item)) in map.iter().enumerate() {
                let _ = write!(
                    out,
                    "{}{}: ",
                    pad(depth + 1),
                    escape(&serde_json::to_string(key).unwrap_or_default())
                );
                match (key.as_str(), item.as_str()) {
                    ("$ref", Some(target)) => {
                        let quoted = escape(&item.to_json());
                        match target.strip_prefix("#/components/schemas/") {
                            Some(name) => {
                                let _ = write!(
                                    out,
                                    "<a href=\"#schema-{}\">{quoted}</a>",
                                    escape(name)
                                );
                            }
                            None => out.push_str(&quoted),
                        }
                    }
                    _ => pretty_into(out, item, depth + 1),
                }
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(depth));
        }
        Node::Array(items) => {
            // Short arrays of scalars stay on one line.
            if items
                .iter()
                .all(|v| v.as_object().is_none() && v.as_array().is_none())
            {
                let line: Vec<String> = items.iter().map(|v| escape(&v.to_json())).collect();
                let _ = write!(out, "[{}]", line.join(", "));
                return;
            }
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                pretty_into(out, item, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(depth));
        }
        scalar => out.push_str(&escape(&scalar.to_json())),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Paragraphs of [`inline`] text.
fn markdown(text: &str) -> String {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>", inline(p)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The little Markdown the descriptions use: `code` and **bold**.
fn inline(text: &str) -> String {
    let escaped = escape(text);
    let mut out = String::with_capacity(escaped.len());
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            for (j, piece) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<strong>{piece}</strong>");
                } else {
                    out.push_str(piece);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: &str) -> Node {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn inline_markdown_is_escaped() {
        assert_eq!(
            inline("a `<b>` **c**"),
            "a <code>&lt;b&gt;</code> <strong>c</strong>"
        );
    }

    #[test]
    fn refs_link_to_schemas() {
        let html = pretty(&node(r##"{"$ref": "#/components/schemas/Problem"}"##));
        assert!(html.contains("<a href=\"#schema-Problem\">"), "{html}");
    }
}
