//! Error codes (bLIP-50 errors; bLIP-51 create_order and get_order errors). T-22: LSPS1 codes stay in 100–199, client
//! rejected is `1`.

/// JSON-RPC parse error; LSPS0 uses it for every "bad message format" (T-02..T-07).
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC invalid request (a request with a usable id whose `params` is not structured).
pub const INVALID_REQUEST: i64 = -32600;
/// T-09: unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// T-10/T-11, C-01: invalid or unrecognized params.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error; always allowed.
pub const INTERNAL_ERROR: i64 = -32603;
/// LSPS0 common error "client rejected" (written `001` in the spec), C-14.
pub const CLIENT_REJECTED: i64 = 1;
/// LSPS1 option mismatch (C-06..C-12).
pub const OPTION_MISMATCH: i64 = 100;
/// LSPS1 order not found.
pub const NOT_FOUND: i64 = 101;
/// LSPS1 unrecognized or stale token (C-13).
pub const UNRECOGNIZED_TOKEN: i64 = 102;
