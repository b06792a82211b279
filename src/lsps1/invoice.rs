//! The BOLT11 payment option (bLIP-51, payment 3.1, P-02, ruling 12).
//!
//! The plugin builds the invoice itself with a payment hash whose preimage only it knows,
//! signs it with a throwaway key, and has the node re-sign it with `signinvoice`. lightningd
//! then has no invoice for that hash, so it can never settle the HTLCs by itself: if the
//! plugin is gone, it fails them back ("Unknown invoice", recorded in the v26.06.6 fixtures),
//! which is an automatic refund.

use std::sync::OnceLock;
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret, RouteHint, RouteHintHop, RoutingFees};

/// bLIP-51: the invoice MUST be at most 2048 characters.
pub const MAX_INVOICE_LEN: usize = 2048;

/// What the invoice must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceSpec {
    pub network: bitcoin::Network,
    pub amount_msat: u64,
    pub payment_hash: [u8; 32],
    pub payment_secret: [u8; 32],
    pub description: String,
    /// Invoice timestamp, whole seconds (BOLT11 has no finer unit).
    pub timestamp_secs: u64,
    pub expiry_secs: u64,
    pub min_final_cltv: u64,
    /// One single-hop route hint each (a node with only private channels).
    pub route_hints: Vec<crate::ports::RouteHop>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    #[error("cannot build the invoice: {0}")]
    Build(String),
    #[error("the node returned an unusable invoice: {0}")]
    Signed(String),
}

fn secp() -> &'static Secp256k1<All> {
    static SECP: OnceLock<Secp256k1<All>> = OnceLock::new();
    SECP.get_or_init(Secp256k1::new)
}

/// SHA-256 of a preimage: the payment hash.
pub fn payment_hash_of(preimage: &[u8; 32]) -> [u8; 32] {
    sha256::Hash::hash(preimage).to_byte_array()
}

/// Build the invoice, signed by a placeholder key, ready for `signinvoice`.
pub fn build_unsigned(spec: &InvoiceSpec) -> Result<String, InvoiceError> {
    // The placeholder signature is replaced by the node's; the key signs nothing else.
    let placeholder = SecretKey::from_slice(&[0x42; 32]).map_err(|e| InvoiceError::Build(e.to_string()))?;
    let mut builder = InvoiceBuilder::new(Currency::from(spec.network))
        .description(spec.description.clone())
        .payment_hash(sha256::Hash::from_byte_array(spec.payment_hash))
        .payment_secret(PaymentSecret(spec.payment_secret))
        .duration_since_epoch(Duration::from_secs(spec.timestamp_secs))
        .min_final_cltv_expiry_delta(spec.min_final_cltv)
        .amount_milli_satoshis(spec.amount_msat)
        .expiry_time(Duration::from_secs(spec.expiry_secs))
        .basic_mpp();
    for h in &spec.route_hints {
        builder = builder.private_route(RouteHint(vec![RouteHintHop {
            src_node_id: h.src_node_id,
            short_channel_id: h.short_channel_id,
            fees: RoutingFees { base_msat: h.fee_base_msat, proportional_millionths: h.fee_proportional_millionths },
            cltv_expiry_delta: h.cltv_expiry_delta,
            htlc_minimum_msat: None,
            htlc_maximum_msat: None,
        }]));
    }
    let invoice = builder
        .build_signed(|msg| secp().sign_ecdsa_recoverable(msg, &placeholder))
        .map_err(|e| InvoiceError::Build(format!("{e:?}")))?;
    Ok(invoice.to_string())
}

/// Check that the invoice the node signed still says exactly what we asked for, is signed by
/// `node_id`, and fits bLIP-51's size limit. Guards against a node (or a bug) changing it.
pub fn verify_signed(spec: &InvoiceSpec, signed: &str, node_id: &PublicKey) -> Result<(), InvoiceError> {
    let bad = |m: &str| Err(InvoiceError::Signed(m.to_string()));
    if signed.len() > MAX_INVOICE_LEN {
        return bad("longer than 2048 characters");
    }
    // Parsing checks the signature (Bolt11Invoice::from_signed); the key it recovers must
    // be this node's. (A second check_signature here was a third key recovery per order,
    // 8% of create_order's CPU, BENCHMARKS.md.)
    let inv: Bolt11Invoice = signed.parse().map_err(|e| InvoiceError::Signed(format!("does not parse: {e:?}")))?;
    if inv.recover_payee_pub_key() != *node_id {
        return bad("not signed by this node");
    }
    if inv.payment_hash().to_byte_array() != spec.payment_hash {
        return bad("payment hash changed");
    }
    if inv.amount_milli_satoshis() != Some(spec.amount_msat) {
        return bad("amount changed");
    }
    if inv.payment_secret().0 != spec.payment_secret {
        return bad("payment secret changed");
    }
    if inv.duration_since_epoch().as_secs() != spec.timestamp_secs || inv.expiry_time().as_secs() != spec.expiry_secs {
        return bad("expiry changed");
    }
    if inv.min_final_cltv_expiry_delta() != spec.min_final_cltv {
        return bad("min_final_cltv_expiry_delta changed");
    }
    if inv.route_hints().len() != spec.route_hints.len() {
        return bad("route hints changed");
    }
    if inv.currency() != Currency::from(spec.network) {
        return bad("network changed");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec() -> InvoiceSpec {
        InvoiceSpec {
            network: bitcoin::Network::Regtest,
            amount_msat: 81_961_000,
            payment_hash: payment_hash_of(&[7; 32]),
            payment_secret: [9; 32],
            description: "LSPS1 order 6f0c3c1e-8a5b-4c4e-9d6f-2b7a1f0e3d21".into(),
            timestamp_secs: 1_795_506_588,
            expiry_secs: 3600,
            min_final_cltv: 144,
            route_hints: vec![],
        }
    }

    /// Re-sign as `signinvoice` does: same raw invoice, the node's key.
    pub(crate) fn resign(invoice: &str, key: &SecretKey) -> String {
        let inv: Bolt11Invoice = invoice.parse().unwrap();
        let raw = inv.into_signed_raw().into_parts().0;
        let signed = raw.sign::<_, ()>(|m| Ok(secp().sign_ecdsa_recoverable(m, key))).unwrap();
        Bolt11Invoice::from_signed(signed).unwrap().to_string()
    }

    #[test]
    fn p02_built_invoice_says_what_was_asked() {
        let s = spec();
        let unsigned = build_unsigned(&s).unwrap();
        assert!(unsigned.starts_with("lnbcrt819610n1"), "{unsigned}");
        let node_key = SecretKey::from_slice(&[3; 32]).unwrap();
        let node_id = PublicKey::from_secret_key(secp(), &node_key);
        let signed = resign(&unsigned, &node_key);
        verify_signed(&s, &signed, &node_id).unwrap();
        assert!(signed.len() < 600, "well under the 2048 limit: {}", signed.len());
        // Still carrying the placeholder signature, it is refused.
        assert!(verify_signed(&s, &unsigned, &node_id).is_err());
        // Any change of amount is caught.
        let other = InvoiceSpec { amount_msat: 1_000, ..s.clone() };
        assert!(verify_signed(&other, &signed, &node_id).is_err());
        assert!(verify_signed(&s, "lnbcrt1garbage", &node_id).is_err());
    }

    #[test]
    fn route_hints_survive_signing() {
        let peer = PublicKey::from_secret_key(secp(), &SecretKey::from_slice(&[5; 32]).unwrap());
        let hop = crate::ports::RouteHop {
            src_node_id: peer,
            short_channel_id: 103 << 40 | 1 << 16,
            fee_base_msat: 1,
            fee_proportional_millionths: 10,
            cltv_expiry_delta: 6,
        };
        let s = InvoiceSpec { route_hints: vec![hop], ..spec() };
        let node_key = SecretKey::from_slice(&[3; 32]).unwrap();
        let signed = resign(&build_unsigned(&s).unwrap(), &node_key);
        verify_signed(&s, &signed, &PublicKey::from_secret_key(secp(), &node_key)).unwrap();
        let inv: Bolt11Invoice = signed.parse().unwrap();
        let hints = inv.route_hints();
        assert_eq!(hints.len(), 1);
        assert_eq!((hints[0].0[0].src_node_id, hints[0].0[0].short_channel_id), (peer, 103 << 40 | 1 << 16));
    }

    #[test]
    fn every_network_has_its_prefix() {
        for (net, prefix) in [
            (bitcoin::Network::Bitcoin, "lnbc"),
            (bitcoin::Network::Testnet, "lntb"),
            (bitcoin::Network::Signet, "lntbs"),
            (bitcoin::Network::Regtest, "lnbcrt"),
        ] {
            let s = InvoiceSpec { network: net, ..spec() };
            assert!(build_unsigned(&s).unwrap().starts_with(prefix));
        }
    }
}
