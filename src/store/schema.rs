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
    // v5 (the operator's console): running totals kept by triggers in the same transaction
    // as the change they count, so the status figures read a few dozen rows at any store
    // size; lease ends by block; a lease's end, its channel's activity and its close
    // (the lease-end policy); the HTLCs held now, by expiry.
    r#"
    CREATE TABLE stats_phase (
        phase             TEXT PRIMARY KEY NOT NULL,
        orders            INTEGER NOT NULL
    );
    -- Days are UTC days since the epoch (at_ms / 86400000). Revenue is the fee of the option
    -- the order was paid with; a payment that went back after the open earns nothing.
    CREATE TABLE stats_daily (
        day               INTEGER PRIMARY KEY NOT NULL,
        created           INTEGER NOT NULL DEFAULT 0,
        completed         INTEGER NOT NULL DEFAULT 0,
        failed            INTEGER NOT NULL DEFAULT 0,
        revenue_sat       INTEGER NOT NULL DEFAULT 0,
        capacity_sat      INTEGER NOT NULL DEFAULT 0
    );
    -- Refunds: orders whose held payment went back, by failure reason (and
    -- 'refunded_after_open'); on-chain refund transactions, by kind ('onchain_whole',
    -- 'onchain_surplus'), counted apart by the figures.
    CREATE TABLE stats_refunds (
        cause             TEXT PRIMARY KEY NOT NULL,
        refunds           INTEGER NOT NULL
    );
    CREATE TABLE stats_lease_ends (
        block             INTEGER PRIMARY KEY NOT NULL,
        channels          INTEGER NOT NULL,
        leased_sat        INTEGER NOT NULL
    );

    CREATE TRIGGER stats_order_insert AFTER INSERT ON orders BEGIN
        INSERT INTO stats_phase (phase, orders) VALUES (NEW.phase, 1)
            ON CONFLICT (phase) DO UPDATE SET orders = orders + 1;
        INSERT INTO stats_daily (day, created) VALUES (NEW.created_at_ms / 86400000, 1)
            ON CONFLICT (day) DO UPDATE SET created = created + 1;
    END;
    CREATE TRIGGER stats_order_phase AFTER UPDATE OF phase ON orders WHEN NEW.phase <> OLD.phase BEGIN
        UPDATE stats_phase SET orders = orders - 1 WHERE phase = OLD.phase;
        INSERT INTO stats_phase (phase, orders) VALUES (NEW.phase, 1)
            ON CONFLICT (phase) DO UPDATE SET orders = orders + 1;
        INSERT INTO stats_daily (day, completed, revenue_sat, capacity_sat)
            SELECT NEW.updated_at_ms / 86400000, 1,
                COALESCE((SELECT p.fee_total_sat FROM payments p
                    WHERE p.order_id = NEW.order_id AND p.method = NEW.paid_method), NEW.fee_total_sat),
                NEW.lsp_balance_sat
            WHERE NEW.phase = 'completed'
            ON CONFLICT (day) DO UPDATE SET completed = completed + 1,
                revenue_sat = revenue_sat + excluded.revenue_sat, capacity_sat = capacity_sat + excluded.capacity_sat;
        INSERT INTO stats_daily (day, failed)
            SELECT NEW.updated_at_ms / 86400000, 1 WHERE NEW.phase = 'failed'
            ON CONFLICT (day) DO UPDATE SET failed = failed + 1;
        INSERT INTO stats_refunds (cause, refunds)
            SELECT COALESCE(NEW.failure_reason, 'unknown'), 1 WHERE NEW.phase = 'failed' AND OLD.phase IN ('payment_held', 'opening')
            ON CONFLICT (cause) DO UPDATE SET refunds = refunds + 1;
    END;
    -- The open went through but the payment went back (ruling 17): no revenue, one refund.
    CREATE TRIGGER stats_refunded_after_open AFTER UPDATE OF refunded_after_open ON orders
        WHEN NEW.refunded_after_open = 1 AND OLD.refunded_after_open = 0 AND NEW.phase = 'completed' BEGIN
        UPDATE stats_daily SET revenue_sat = revenue_sat - COALESCE((SELECT p.fee_total_sat FROM payments p
                WHERE p.order_id = NEW.order_id AND p.method = NEW.paid_method), NEW.fee_total_sat)
            WHERE day = NEW.updated_at_ms / 86400000;
        INSERT INTO stats_refunds (cause, refunds) VALUES ('refunded_after_open', 1)
            ON CONFLICT (cause) DO UPDATE SET refunds = refunds + 1;
    END;
    CREATE TRIGGER stats_chain_refund AFTER INSERT ON chain_refunds WHEN NEW.replaces IS NULL BEGIN
        INSERT INTO stats_refunds (cause, refunds) VALUES ('onchain_' || NEW.kind, 1)
            ON CONFLICT (cause) DO UPDATE SET refunds = refunds + 1;
    END;
    CREATE TRIGGER stats_lease_insert AFTER INSERT ON channels WHEN NEW.lease_end_block IS NOT NULL BEGIN
        INSERT INTO stats_lease_ends (block, channels, leased_sat)
            SELECT NEW.lease_end_block, 1, lsp_balance_sat FROM orders WHERE order_id = NEW.order_id
            ON CONFLICT (block) DO UPDATE SET channels = channels + 1, leased_sat = leased_sat + excluded.leased_sat;
    END;
    CREATE TRIGGER stats_lease_delete AFTER DELETE ON channels WHEN OLD.lease_end_block IS NOT NULL BEGIN
        UPDATE stats_lease_ends SET channels = channels - 1,
            leased_sat = leased_sat - (SELECT lsp_balance_sat FROM orders WHERE order_id = OLD.order_id)
            WHERE block = OLD.lease_end_block;
    END;

    -- The totals of what is already there, from the append-only event log: the day an order
    -- completed or failed is the day of that event, whatever touched the order since.
    INSERT INTO stats_phase (phase, orders) SELECT phase, COUNT(*) FROM orders GROUP BY phase;
    INSERT INTO stats_daily (day, created) SELECT created_at_ms / 86400000, COUNT(*) FROM orders GROUP BY 1;
    INSERT INTO stats_daily (day, completed, revenue_sat, capacity_sat)
        SELECT e.at_ms / 86400000, COUNT(*),
            SUM(CASE WHEN o.refunded_after_open = 1 THEN 0 ELSE COALESCE(p.fee_total_sat, o.fee_total_sat) END),
            SUM(o.lsp_balance_sat)
        FROM events e JOIN orders o ON o.order_id = e.order_id
        LEFT JOIN payments p ON p.order_id = o.order_id AND p.method = o.paid_method
        WHERE e.to_phase = 'completed' AND o.phase = 'completed' GROUP BY 1 ORDER BY 1
        ON CONFLICT (day) DO UPDATE SET completed = excluded.completed,
            revenue_sat = excluded.revenue_sat, capacity_sat = excluded.capacity_sat;
    INSERT INTO stats_daily (day, failed)
        SELECT e.at_ms / 86400000, COUNT(*) FROM events e JOIN orders o ON o.order_id = e.order_id
        WHERE e.to_phase = 'failed' AND o.phase = 'failed' GROUP BY 1 ORDER BY 1
        ON CONFLICT (day) DO UPDATE SET failed = excluded.failed;
    INSERT INTO stats_refunds (cause, refunds)
        SELECT COALESCE(o.failure_reason, 'unknown'), COUNT(*) FROM events e JOIN orders o ON o.order_id = e.order_id
        WHERE e.to_phase = 'failed' AND e.from_phase IN ('payment_held', 'opening') GROUP BY 1;
    INSERT INTO stats_refunds (cause, refunds)
        SELECT 'refunded_after_open', COUNT(*) FROM orders WHERE refunded_after_open = 1 AND phase = 'completed'
        HAVING COUNT(*) > 0;
    INSERT INTO stats_refunds (cause, refunds)
        SELECT 'onchain_' || kind, COUNT(*) FROM chain_refunds WHERE replaces IS NULL GROUP BY 1 ORDER BY 1
        ON CONFLICT (cause) DO UPDATE SET refunds = refunds + excluded.refunds;
    INSERT INTO stats_lease_ends (block, channels, leased_sat)
        SELECT c.lease_end_block, COUNT(*), SUM(o.lsp_balance_sat) FROM channels c JOIN orders o ON o.order_id = c.order_id
        WHERE c.lease_end_block IS NOT NULL GROUP BY 1;

    CREATE INDEX htlcs_unresolved ON htlcs (cltv_expiry) WHERE resolution IS NULL;
    CREATE INDEX channels_by_lease_end ON channels (lease_end_block) WHERE lease_end_block IS NOT NULL;
    -- The lease-end policy: NULL while the lease runs; 'ended' once its end block passed
    -- (protection lifted, the operator told); 'closing' once the policy asked for a close;
    -- 'closed' once the channel is gone. The channel's fulfilled payments as last seen,
    -- and the block at which that count last moved (idle since).
    ALTER TABLE channels ADD COLUMN lease_state TEXT CHECK (lease_state IN ('ended', 'closing', 'closed'));
    ALTER TABLE channels ADD COLUMN activity_count INTEGER;
    ALTER TABLE channels ADD COLUMN active_height INTEGER;
    -- Leases still running (each block ends the due ones) and leases ended but not closed
    -- (the policy's work), apart: kept channels never slow the first.
    CREATE INDEX channels_lease_running ON channels (lease_end_block)
        WHERE lease_end_block IS NOT NULL AND lease_state IS NULL;
    CREATE INDEX channels_lease_open ON channels (lease_end_block)
        WHERE lease_end_block IS NOT NULL AND lease_state IN ('ended', 'closing');
    "#,
    // v6 (several nodes, one order book): the node that sells each order, which alone
    // drives it ('' until a node claims the orders recorded before it; see
    // `Store::for_node`); the address a REST order came from, so that per-address limits
    // count on every node; each node's own view of the chain.
    r#"
    ALTER TABLE orders ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE orders ADD COLUMN client_ip TEXT;
    CREATE INDEX orders_by_node_phase ON orders (node_id, phase, expires_at_ms);
    CREATE INDEX orders_unpaid_by_ip ON orders (client_ip, expires_at_ms)
        WHERE phase = 'awaiting_payment' AND client_ip IS NOT NULL;
    DROP TABLE chain_blocks;
    CREATE TABLE chain_blocks (
        node_id TEXT NOT NULL,
        height INTEGER NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (node_id, height)
    );
    "#,
    // v7: PostgreSQL spreads its running totals over slots (concurrent writers); SQLite has
    // one writer and keeps one row per total. The step keeps the numbering the same.
    "SELECT 1;",
];

/// The schema version this code writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;
