//! REST error bodies and statuses. One body that every REST wallet in the
//! wild displays (docs/interop.md): a truthy top-level `error` (ZEUS), the
//! `{code, message, data}` object (BTCPay), a top-level human `message`, and a non-2xx
//! status (Alby). Nothing internal (paths, traces) is ever put in it.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::lsps0::codes;
use crate::lsps0::jsonrpc::RpcError;

/// The HTTP status of an LSPS error.
pub fn status_of(e: &RpcError) -> StatusCode {
    match e.code {
        codes::INVALID_PARAMS | codes::OPTION_MISMATCH | codes::UNRECOGNIZED_TOKEN => StatusCode::BAD_REQUEST,
        codes::PARSE_ERROR | codes::INVALID_REQUEST => StatusCode::BAD_REQUEST,
        codes::NOT_FOUND | codes::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        codes::CLIENT_REJECTED => StatusCode::FORBIDDEN,
        _ if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The human text: the detail in `data.message` when there is one.
fn human(e: &RpcError) -> String {
    e.data.as_ref().and_then(|d| d.get("message")).and_then(Value::as_str).unwrap_or(&e.message).to_string()
}

/// An LSPS error as a REST response.
pub fn error_response(e: &RpcError) -> Response {
    let body = json!({ "error": e, "message": human(e) });
    let status = status_of(e);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // The order store or the node is out for a moment: say when to come back.
        return (status, [(header::CONTENT_TYPE, "application/json"), (header::RETRY_AFTER, "5")], body.to_string())
            .into_response();
    }
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// An HTTP-level error (no LSPS code applies: 404 route, 405, 408, 413, 415) in the same shape,
/// with code `-32600` (invalid request).
pub fn plain(status: StatusCode, message: &str) -> Response {
    let e = RpcError::invalid_request(message);
    let body = json!({ "error": e, "message": message });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
