//! The MCP tools on the official Rust SDK (rmcp): `list_requests`, `retrieve`,
//! `delivery_status`. Schemas are written out here (docs/mcp.md holds them verbatim, and a test
//! keeps the two the same); every failure is a tool error with one line that holds no data.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};

use super::BlindAgent;

/// What the model is told when it connects.
pub const INSTRUCTIONS: &str = "sealrelay hands data to the person who asked for it without you \
seeing it. list_requests shows the open requests addressed to this agent: who asked, for which \
resource, and why. retrieve fetches a request's resource through a connector, encrypts it to the \
requester and stores it at the relay: you get a handle, never the content. delivery_status tells \
whether the requester has received it.";

fn object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The tools, with their input and output schemas.
pub fn tools() -> Vec<Tool> {
    let read_only = |title: &str| {
        let mut a = ToolAnnotations::default();
        a.title = Some(title.to_owned());
        a.read_only_hint = Some(true);
        a.destructive_hint = Some(false);
        a.idempotent_hint = Some(true);
        a.open_world_hint = Some(false);
        a
    };
    let mut retrieve_notes = ToolAnnotations::default();
    retrieve_notes.title = Some("Retrieve and seal for the requester".to_owned());
    retrieve_notes.read_only_hint = Some(false);
    retrieve_notes.destructive_hint = Some(false);
    retrieve_notes.idempotent_hint = Some(false);
    retrieve_notes.open_world_hint = Some(true);
    vec![
        Tool::new(
            "list_requests",
            "List the open requests addressed to this agent: grant id, resource, purpose, \
             requester and expiry. You see what was asked and why, never any data.",
            object(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_raw_output_schema(object(json!({
            "type": "object",
            "properties": {
                "requests": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "grant_id": {"type": "string", "description": "32 hex digits"},
                            "resource": {"type": "string"},
                            "purpose": {"type": "string"},
                            "requester": {"type": "string", "description": "the requester's SPIFFE id"},
                            "expires": {"type": "string", "description": "RFC 3339, UTC"},
                            "connector": {"type": "boolean", "description": "whether a connector serves the resource"}
                        },
                        "required": ["grant_id", "resource", "purpose", "requester", "expires", "connector"]
                    }
                }
            },
            "required": ["requests"]
        })))
        .with_annotations(read_only("List open requests")),
        Tool::new(
            "retrieve",
            "Fetch a request's resource from its source and seal it to the person who asked, at \
             the source: the data goes encrypted to the requester and cannot be read here. You \
             get a handle, the envelope id and the ciphertext's size and SHA-256 — never the \
             content. Each grant can be retrieved once.",
            object(json!({
                "type": "object",
                "properties": {
                    "grant_id": {"type": "string", "description": "the grant id from list_requests (32 hex digits)"}
                },
                "required": ["grant_id"],
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(object(json!({
            "type": "object",
            "properties": {
                "handle": {"type": "string", "description": "pass to delivery_status"},
                "envelope_id": {"type": "string"},
                "bytes": {"type": "integer", "description": "ciphertext bytes stored at the relay"},
                "sha256": {"type": "string", "description": "SHA-256 of the ciphertext, not of the data"},
                "status": {"type": "string", "enum": ["submitted"]}
            },
            "required": ["handle", "envelope_id", "bytes", "sha256", "status"]
        })))
        .with_annotations(retrieve_notes),
        Tool::new(
            "delivery_status",
            "Whether the requester has received what retrieve sent: open, submitted, delivered \
             (with the receipt's index in the relay's transparency log), undecryptable, or \
             expired. It says nothing of the content.",
            object(json!({
                "type": "object",
                "properties": {
                    "handle": {"type": "string", "description": "the handle retrieve returned"}
                },
                "required": ["handle"],
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(object(json!({
            "type": "object",
            "properties": {
                "handle": {"type": "string"},
                "status": {"type": "string", "enum": ["open", "submitted", "delivered", "undecryptable", "expired"]},
                "envelope_id": {"type": ["string", "null"]},
                "receipt_log_index": {"type": ["integer", "null"]}
            },
            "required": ["handle", "status", "envelope_id", "receipt_log_index"]
        })))
        .with_annotations(read_only("Delivery status")),
    ]
}

/// The tools as docs/mcp.md shows them (pretty JSON).
pub fn tools_json() -> String {
    serde_json::to_string_pretty(&tools()).unwrap_or_default()
}

/// The MCP server: a [`BlindAgent`] behind the three tools.
#[derive(Clone)]
pub struct McpServer {
    agent: Arc<BlindAgent>,
}

impl McpServer {
    pub fn new(agent: BlindAgent) -> McpServer {
        McpServer {
            agent: Arc::new(agent),
        }
    }

    async fn run(&self, name: &str, args: &JsonObject) -> CallToolResult {
        let text_arg = |key: &str| -> Result<&str, crate::Error> {
            args.get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| crate::Error::bad_input(format!("{key} is required (a string)")))
        };
        let outcome: Result<(Value, String), crate::Error> = match name {
            "list_requests" => self.agent.list_requests().await.map(|list| {
                let n = list.len();
                (
                    json!({ "requests": list }),
                    format!("{n} open request(s) for this agent."),
                )
            }),
            "retrieve" => match text_arg("grant_id") {
                Err(e) => Err(e),
                Ok(id) => self.agent.retrieve(id).await.map(|r| {
                    let text = format!(
                        "The data was encrypted to the requester and stored at the relay as envelope {} ({} bytes of ciphertext). It cannot be read here; only the requester can open it. Check delivery with delivery_status and handle {}.",
                        r.envelope_id, r.bytes, r.handle
                    );
                    (json!(r), text)
                }),
            },
            "delivery_status" => match text_arg("handle") {
                Err(e) => Err(e),
                Ok(h) => self.agent.delivery_status(h).await.map(|d| {
                    let text = match d.receipt_log_index {
                        Some(i) => format!("{}: the requester's receipt is entry {i} of the relay's log.", d.status),
                        None => format!("{}.", d.status),
                    };
                    (json!(d), text)
                }),
            },
            _ => Err(crate::Error::bad_input(format!(
                "no tool {:?}: use list_requests, retrieve or delivery_status",
                crate::ids::truncate_for_message(name)
            ))),
        };
        match outcome {
            Ok((value, text)) => {
                let mut result = CallToolResult::structured(value);
                result.content = vec![ContentBlock::text(text)];
                result
            }
            Err(e) => {
                tracing::warn!(tool = name, error = %e, "tool refused");
                CallToolResult::error(vec![ContentBlock::text(e.message().to_owned())])
            }
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("sealrelay", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        Ok(self.run(&request.name, &args).await.into())
    }
}
