//! Schema migrations. Version `n` of the schema is reached by running `MIGRATIONS[..n]`,
//! each step in its own transaction, and recorded in `PRAGMA user_version`.
//! Never edit a released step: add a new one.

pub const MIGRATIONS: &[&str] = &[
    // v1: orders, their payment options, held HTLCs, channels and the event log. The HTLC
    // and channel tables serve the order lifecycle (roadmap stage 2) so it needs no rewrite.
    r#"
    CREATE TABLE orders (
        order_id                        TEXT PRIMARY KEY NOT NULL,
        created_at_ms                   INTEGER NOT NULL,
        updated_at_ms                   INTEGER NOT NULL,
        -- The node the channel goes to; P2P: the peer that asked (ruling 8).
        client_node_id                  TEXT NOT NULL,
        transport                       TEXT NOT NULL CHECK (transport IN ('p2p', 'rest')),
        lsp_balance_sat                 INTEGER NOT NULL CHECK (lsp_balance_sat >= 1),
        client_balance_sat              INTEGER NOT NULL CHECK (client_balance_sat >= 0),
        required_channel_confirmations  INTEGER NOT NULL,
        funding_confirms_within_blocks  INTEGER NOT NULL,
        channel_expiry_blocks           INTEGER NOT NULL,
        token                           TEXT NOT NULL,
        refund_onchain_address          TEXT,
        announce_channel                INTEGER NOT NULL CHECK (announce_channel IN (0, 1)),
        client_info                     TEXT,
        phase                           TEXT NOT NULL
            CHECK (phase IN ('awaiting_payment', 'payment_held', 'opening', 'completed', 'failed')),
        failure_reason                  TEXT,
        paid_method                     TEXT CHECK (paid_method IN ('bolt11', 'bolt12', 'onchain')),
        fee_total_sat                   INTEGER NOT NULL,
        order_total_sat                 INTEGER NOT NULL,
        funding_feerate_perkw           INTEGER NOT NULL,
        -- On-chain funds this order holds back while it is in flight.
        reserved_sat                    INTEGER NOT NULL,
        -- Payment deadline of the earliest-expiring option (ruling 13).
        expires_at_ms                   INTEGER NOT NULL
    );
    CREATE INDEX orders_by_peer ON orders (client_node_id, phase);
    CREATE INDEX orders_by_phase ON orders (phase, expires_at_ms);
    CREATE INDEX orders_by_created ON orders (created_at_ms);

    CREATE TABLE payments (
        order_id          TEXT NOT NULL REFERENCES orders (order_id),
        method            TEXT NOT NULL CHECK (method IN ('bolt11', 'bolt12', 'onchain')),
        expires_at_ms     INTEGER NOT NULL,
        fee_total_sat     INTEGER NOT NULL,
        order_total_sat   INTEGER NOT NULL,
        invoice           TEXT,
        payment_hash      TEXT UNIQUE,
        preimage          TEXT,
        payment_secret    TEXT,
        min_final_cltv    INTEGER,
        offer             TEXT,
        address           TEXT,
        PRIMARY KEY (order_id, method)
    );

    CREATE TABLE htlcs (
        payment_hash      TEXT NOT NULL,
        short_channel_id  TEXT NOT NULL,
        htlc_id           INTEGER NOT NULL,
        amount_msat       INTEGER NOT NULL,
        cltv_expiry       INTEGER NOT NULL,
        received_at_ms    INTEGER NOT NULL,
        resolution        TEXT CHECK (resolution IN ('settled', 'failed')),
        PRIMARY KEY (short_channel_id, htlc_id)
    );
    CREATE INDEX htlcs_by_hash ON htlcs (payment_hash);

    CREATE TABLE channels (
        order_id          TEXT PRIMARY KEY NOT NULL REFERENCES orders (order_id),
        channel_id        TEXT,
        funding_txid      TEXT NOT NULL,
        funding_outnum    INTEGER NOT NULL,
        funded_at_ms      INTEGER NOT NULL,
        expires_at_ms     INTEGER NOT NULL,
        lease_end_block   INTEGER
    );

    -- Every state change of every order, never updated or deleted.
    CREATE TABLE events (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id          TEXT NOT NULL REFERENCES orders (order_id),
        at_ms             INTEGER NOT NULL,
        kind              TEXT NOT NULL,
        from_phase        TEXT,
        to_phase          TEXT,
        detail            TEXT
    );
    CREATE INDEX events_by_order ON events (order_id, seq);
    CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    "#,
    // v2 (stage 2, the order lifecycle): a `null` token is mirrored as `null` (ruling 2);
    // when the payment was held; an order whose channel opened but whose payment went back
    // (ruling 17); the HTLCs' order, and an index for the unresolved ones.
    r#"
    ALTER TABLE orders ADD COLUMN token_null INTEGER NOT NULL DEFAULT 0 CHECK (token_null IN (0, 1));
    ALTER TABLE orders ADD COLUMN held_at_ms INTEGER;
    ALTER TABLE orders ADD COLUMN refunded_after_open INTEGER NOT NULL DEFAULT 0
        CHECK (refunded_after_open IN (0, 1));
    ALTER TABLE htlcs ADD COLUMN order_id TEXT REFERENCES orders (order_id);
    CREATE INDEX htlcs_by_order ON htlcs (order_id, resolution);
    CREATE UNIQUE INDEX channels_by_channel_id ON channels (channel_id) WHERE channel_id IS NOT NULL;
    -- No funding outpoint serves two orders (ruling 17).
    CREATE UNIQUE INDEX channels_by_outpoint ON channels (funding_txid, funding_outnum);
    "#,
    // v3 (the store at scale): a client's unpaid orders are counted on every
    // create_order; with only (client_node_id, phase) SQLite counted through every unpaid
    // order of every client (orders_by_phase). The listing of one state, newest first,
    // reads its index in order instead of sorting the whole state.
    r#"
    CREATE INDEX orders_by_client ON orders (client_node_id, phase, expires_at_ms);
    DROP INDEX orders_by_peer;
    CREATE INDEX orders_by_phase_created ON orders (phase, created_at_ms);
    "#,
    // v4 (on-chain payments, rulings 21–26): the option's confirmations; every output seen
    // at an order's address and what it is to the order; refunds, written before they are
    // broadcast; recent block hashes, to tell a reorg; a flag for the operator.
    r#"
    ALTER TABLE payments ADD COLUMN min_confirmations INTEGER;
    -- Paid beyond the total, still to go back once the channel opened (ruling 23).
    ALTER TABLE payments ADD COLUMN surplus_sat INTEGER;
    CREATE UNIQUE INDEX payments_by_address ON payments (address) WHERE address IS NOT NULL;
    ALTER TABLE orders ADD COLUMN reorg_flagged INTEGER NOT NULL DEFAULT 0 CHECK (reorg_flagged IN (0, 1));
    CREATE TABLE chain_outputs (
        txid              TEXT NOT NULL,
        vout              INTEGER NOT NULL,
        order_id          TEXT NOT NULL REFERENCES orders (order_id),
        amount_sat        INTEGER NOT NULL CHECK (amount_sat >= 0),
        blockheight       INTEGER,
        first_seen_ms     INTEGER NOT NULL,
        role              TEXT NOT NULL
            CHECK (role IN ('seen', 'payment', 'refunding', 'refunded', 'dust', 'kept')),
        refund_txid       TEXT,
        PRIMARY KEY (txid, vout)
    );
    CREATE INDEX chain_outputs_by_order ON chain_outputs (order_id);
    -- The outputs that still call for work (the per-block pass reads only these).
    CREATE INDEX chain_outputs_open ON chain_outputs (role) WHERE role IN ('seen', 'payment', 'refunding');
    CREATE TABLE chain_refunds (
        txid              TEXT PRIMARY KEY NOT NULL,
        order_id          TEXT NOT NULL REFERENCES orders (order_id),
        -- The signed PSBT: broadcast again as it is until it confirms.
        psbt              TEXT NOT NULL,
        inputs            TEXT NOT NULL,
        destination       TEXT NOT NULL,
        amount_sat        INTEGER NOT NULL,
        fee_sat           INTEGER NOT NULL,
        feerate_perkw     INTEGER NOT NULL,
        created_height    INTEGER NOT NULL,
        created_at_ms     INTEGER NOT NULL,
        state             TEXT NOT NULL CHECK (state IN ('signed', 'broadcast', 'replaced', 'confirmed')),
        replaces          TEXT,
        -- whole: every input goes to the client; surplus: what was paid beyond the
        -- total, the rest back to the wallet as change.
        kind              TEXT NOT NULL DEFAULT 'whole' CHECK (kind IN ('whole', 'surplus'))
    );
    CREATE INDEX chain_refunds_by_order ON chain_refunds (order_id);
    CREATE INDEX chain_refunds_open ON chain_refunds (state) WHERE state IN ('signed', 'broadcast');
    -- The funding promise (ruling 26): NULL while the funding transaction is watched;
    -- channels recorded before this version are not.
    ALTER TABLE channels ADD COLUMN funding_state TEXT
        CHECK (funding_state IN ('confirmed', 'bumped', 'flagged', 'unwatched'));
    ALTER TABLE channels ADD COLUMN funding_child TEXT;
    UPDATE channels SET funding_state = 'unwatched';
    CREATE INDEX channels_funding_watched ON channels (order_id) WHERE funding_state IS NULL OR funding_state = 'bumped';
    CREATE TABLE chain_blocks (
        height            INTEGER PRIMARY KEY NOT NULL,
        hash              TEXT NOT NULL
    );
    "#,
];

/// The schema version this code writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;
