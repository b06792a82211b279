//! bLIP-51 wire types, as the LSP writes them (bLIP-51).
//! `_sat` fields are decimal strings, counts are JSON integers, datetimes are
//! `YYYY-MM-DDThh:mm:ss.uuuZ` (T-20, G-03).

use serde::Serialize;

use crate::config::Lsps1Options;
use crate::lsps0::ser::sat_string;
use crate::order::{OrderState, PaymentState};

/// `lsps1.get_info` result: the flat option object of bLIP-51 "1. lsps1.get_info" (G-01).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GetInfoResponse {
    pub min_required_channel_confirmations: u16,
    pub min_funding_confirms_within_blocks: u16,
    pub supports_zero_channel_reserve: bool,
    pub max_channel_expiry_blocks: u32,
    #[serde(serialize_with = "sat_string")]
    pub min_initial_client_balance_sat: u64,
    #[serde(serialize_with = "sat_string")]
    pub max_initial_client_balance_sat: u64,
    #[serde(serialize_with = "sat_string")]
    pub min_initial_lsp_balance_sat: u64,
    #[serde(serialize_with = "sat_string")]
    pub max_initial_lsp_balance_sat: u64,
    #[serde(serialize_with = "sat_string")]
    pub min_channel_balance_sat: u64,
    #[serde(serialize_with = "sat_string")]
    pub max_channel_balance_sat: u64,
    /// The on-chain option's confirmations, when on-chain payments are offered (ruling 22;
    /// the REST document's legacy field, absent from bLIP-51's get_info: sent only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_onchain_payment_confirmations: Option<u16>,
    /// The smallest order total payable on-chain, when on-chain payments are offered.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_sat_string")]
    pub min_onchain_payment_size_sat: Option<u64>,
}

fn opt_sat_string<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => sat_string(v, s),
        None => s.serialize_none(),
    }
}

impl From<&Lsps1Options> for GetInfoResponse {
    fn from(o: &Lsps1Options) -> Self {
        GetInfoResponse {
            min_required_channel_confirmations: o.min_required_channel_confirmations,
            min_funding_confirms_within_blocks: o.min_funding_confirms_within_blocks,
            supports_zero_channel_reserve: o.supports_zero_channel_reserve,
            max_channel_expiry_blocks: o.max_channel_expiry_blocks,
            min_initial_client_balance_sat: o.min_initial_client_balance_sat,
            max_initial_client_balance_sat: o.max_initial_client_balance_sat,
            min_initial_lsp_balance_sat: o.min_initial_lsp_balance_sat,
            max_initial_lsp_balance_sat: o.max_initial_lsp_balance_sat,
            min_channel_balance_sat: o.min_channel_balance_sat,
            max_channel_balance_sat: o.max_channel_balance_sat,
            min_onchain_payment_confirmations: None,
            min_onchain_payment_size_sat: None,
        }
    }
}

/// The ten get_info field names: the only values `data.property` of error 100 may take (C-12).
pub const GET_INFO_FIELDS: [&str; 10] = [
    "min_required_channel_confirmations",
    "min_funding_confirms_within_blocks",
    "supports_zero_channel_reserve",
    "max_channel_expiry_blocks",
    "min_initial_client_balance_sat",
    "max_initial_client_balance_sat",
    "min_initial_lsp_balance_sat",
    "max_initial_lsp_balance_sat",
    "min_channel_balance_sat",
    "max_channel_balance_sat",
];

/// `payment.bolt11` (bLIP-51, payment 3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bolt11PaymentInfo {
    pub state: PaymentState,
    pub expires_at: String,
    #[serde(serialize_with = "sat_string")]
    pub fee_total_sat: u64,
    #[serde(serialize_with = "sat_string")]
    pub order_total_sat: u64,
    pub invoice: String,
}

/// `payment.onchain` (bLIP-51, payment 3.3; P-11, P-12; rulings 21–23).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnchainPaymentInfo {
    /// `EXPECT_PAYMENT`, `PAID` or `REFUNDED`: there is no `HOLD` on-chain.
    pub state: PaymentState,
    pub expires_at: String,
    #[serde(serialize_with = "sat_string")]
    pub fee_total_sat: u64,
    #[serde(serialize_with = "sat_string")]
    pub order_total_sat: u64,
    pub address: String,
    pub min_onchain_payment_confirmations: u16,
    /// Always `null`: confirmations are required (P-11, ruling 22).
    pub min_fee_for_0conf: Option<u64>,
    /// Mirrored from the request (P-12).
    pub refund_onchain_address: Option<String>,
}

/// `payment`: options the LSP does not offer are omitted, never `null` (P-16, C-15).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct PaymentInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bolt11: Option<Bolt11PaymentInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onchain: Option<OnchainPaymentInfo>,
}

/// `channel` (bLIP-51, channel): `null` until the funding transaction is published (N-09).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    pub funded_at: String,
    /// `txid:vout`, txid in lowercase display order (as bitcoind and lightningd show txids; bLIP-51 does not say).
    pub funding_outpoint: String,
    pub expires_at: String,
}

/// The order object returned by `create_order` and `get_order` (bLIP-51, order object, C-17, C-19, R-01).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderResponse {
    pub order_id: String,
    #[serde(serialize_with = "sat_string")]
    pub lsp_balance_sat: u64,
    #[serde(serialize_with = "sat_string")]
    pub client_balance_sat: u64,
    pub required_channel_confirmations: u16,
    pub funding_confirms_within_blocks: u16,
    pub channel_expiry_blocks: u32,
    /// Mirrored as sent (C-19, ruling 2): `""` when omitted, `null` when sent `null`.
    pub token: Option<String>,
    pub created_at: String,
    pub announce_channel: bool,
    pub order_state: OrderState,
    pub payment: PaymentInfo,
    pub channel: Option<ChannelInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn g03_get_info_encodings() {
        let v = serde_json::to_value(GetInfoResponse::from(&Lsps1Options::default())).unwrap();
        assert_eq!(
            v,
            json!({
                "min_required_channel_confirmations": 0,
                "min_funding_confirms_within_blocks": 6,
                "supports_zero_channel_reserve": false,
                "max_channel_expiry_blocks": 13140,
                "min_initial_client_balance_sat": "0",
                "max_initial_client_balance_sat": "0",
                "min_initial_lsp_balance_sat": "100000",
                "max_initial_lsp_balance_sat": "16777215",
                "min_channel_balance_sat": "100000",
                "max_channel_balance_sat": "16777215"
            })
        );
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = GET_INFO_FIELDS.to_vec();
        expected.sort();
        assert_eq!(keys, expected);
    }

    #[test]
    fn t20_order_encoding() {
        let o = OrderResponse {
            order_id: "id".into(),
            lsp_balance_sat: 10,
            client_balance_sat: 0,
            required_channel_confirmations: 0,
            funding_confirms_within_blocks: 6,
            channel_expiry_blocks: 144,
            token: Some(String::new()),
            created_at: "2024-06-10T03:43:11.542Z".into(),
            announce_channel: false,
            order_state: OrderState::Created,
            payment: PaymentInfo {
                bolt11: Some(Bolt11PaymentInfo {
                    state: PaymentState::ExpectPayment,
                    expires_at: "2024-06-10T04:43:11.542Z".into(),
                    fee_total_sat: 5,
                    order_total_sat: 5,
                    invoice: "lnbcrt1".into(),
                }),
                onchain: None,
            },
            channel: None,
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["channel"], json!(null));
        assert_eq!(v["lsp_balance_sat"], json!("10"));
        assert_eq!(v["order_state"], json!("CREATED"));
        assert_eq!(v["payment"]["bolt11"]["state"], json!("EXPECT_PAYMENT"));
        assert_eq!(v["payment"]["bolt11"]["order_total_sat"], json!("5"));
        assert!(v["payment"].get("onchain").is_none(), "C-15: no on-chain option, not even null");
        assert!(v["payment"].get("bolt12").is_none());
    }
}
