//! The order lifecycle : hold the payment, open the channel,
//! settle or refund, expire, recover. A room of its own, apart from the request service:
//!
//! - [`htlc`]: what to do with an arriving HTLC (pure);
//! - [`plan`]: what a paid order does next (pure);
//! - [`engine`]: the async loop that applies both, holds the hook calls and talks to the
//!   node through the [`crate::ports`] traits.
//!
//! ```text
//!  AwaitingPayment ──HTLC set complete, held──▶ PaymentHeld ──client connected──▶ Opening
//!   │  EXPECT_PAYMENT                            │  HOLD                           │  HOLD
//!   │                                            │                                 ├─fundchannel ok──▶ Completed (PAID)
//!   │                                            │                                 └─fundchannel error─▶ Failed (REFUNDED)
//!   └─expired / cancelled──▶ Failed (REFUNDED) ◀─┴─ CLTV margin, client absent, funds gone, cancel
//! ```

pub mod engine;
pub mod htlc;
pub mod lease;
pub mod onchain;
pub mod plan;

pub use engine::{Engine, HookAnswer, LifecycleConfig};
