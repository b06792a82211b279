use super::*;

#[test]
fn uris_put_ipv4_first() {
    let a = |k: &str, h: &str, p: u16| NodeAddress { kind: k.into(), host: h.into(), port: p };
    let u = format_uris("02ab", vec![a("torv3", "x.onion", 9735), a("ipv6", "::1", 9735), a("ipv4", "1.2.3.4", 9735)]);
    assert_eq!(u, ["02ab@1.2.3.4:9735", "02ab@[::1]:9735", "02ab@x.onion:9735"]);
}

#[test]
fn statuses_of_lsps_errors() {
    use axum::http::StatusCode;
    assert_eq!(status_of(&RpcError::invalid_param("x", "y")), StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&RpcError::option_mismatch("max_channel_expiry_blocks", "y")), StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&RpcError::unrecognized_token("y")), StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&RpcError::not_found("y")), StatusCode::NOT_FOUND);
    assert_eq!(status_of(&RpcError::client_rejected("y")), StatusCode::FORBIDDEN);
    assert_eq!(status_of(&RpcError::internal("y")), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(status_of(&RpcError::unavailable("y")), StatusCode::SERVICE_UNAVAILABLE);
}
