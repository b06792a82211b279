//! A property-based fuzzer of the REST API: random and mutated create_order
//! bodies and get_order queries against the running plugin over HTTP. Whatever is sent,
//! the answer is never a 5xx, and it conforms to the OpenAPI document (a documented
//! status, the schema of that status, the error body); an order that was created came from
//! a body the document's request schema admits.
//!
//! Bounded (200 cases by default, `REST_FUZZ_CASES` to change) so it runs in `cargo test`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

use crate::rest::{Api, Resp, build_request, builder, listening, openapi, zeus_body};
use crate::standin::peer;

const CREATE: &str = "/api/v1/create_order";
const GET_ORDER: &str = "/api/v1/get_order";

/// The request fields the server knows, in bLIP-51's order, then the REST extensions.
const FIELDS: [&str; 10] = [
    "lsp_balance_sat",
    "client_balance_sat",
    "required_channel_confirmations",
    "funding_confirms_within_blocks",
    "channel_expiry_blocks",
    "token",
    "refund_onchain_address",
    "announce_channel",
    "client_info",
    "public_key",
];

/// A value put in a body: JSON, or raw JSON text that `serde_json` would not write
/// (exponents, `-0`, numbers wider than 64 bits).
#[derive(Debug, Clone)]
enum Field {
    Json(Value),
    Raw(String),
}

#[derive(Debug, Clone)]
enum Mutation {
    Remove(usize),
    Set(usize, Field),
    Add(String, Field),
}

#[derive(Debug, Clone)]
enum Body {
    /// A valid body, mutated.
    Mutated(Vec<Mutation>),
    /// A valid body's text cut short.
    Truncated(usize),
    /// Any bytes.
    Bytes(Vec<u8>),
    /// Any JSON value (mostly not an object).
    AnyJson(Value),
    /// A valid body padded to about this many bytes (past the 64 KiB limit or near it).
    Padded(usize),
}

#[derive(Debug, Clone)]
enum Input {
    CreateOrder { content_type: Option<&'static str>, body: Body },
    GetOrder { query: Query },
}

#[derive(Debug, Clone)]
enum Query {
    None,
    /// `order_id=<value>` (percent-encoded), then extra `key=value` pairs.
    Id {
        id: IdValue,
        extra: Vec<(String, String)>,
    },
    /// A raw query string of URI query characters.
    Raw(String),
}

#[derive(Debug, Clone)]
enum IdValue {
    /// One of the orders created so far (index modulo their number).
    Known(usize),
    Text(String),
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (0u64..20_000_000).prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        (0u64..20_000_000).prop_map(|n| json!(n.to_string())),
        "[+-]?[0-9]{0,21}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?".prop_map(Value::String),
        "\\PC{0,24}".prop_map(Value::String),
        Just(json!("")),
        Just(json!("vip")),
        Just(json!("bcrt1qufr4lmec5a8humz7anckxk092uel83r2eqr33s")),
        Just(json!("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")),
        Just(json!("025b7a68b4cd85668e65db6a343a4c607a462cdd010daa793f82be561a3316c5b1")),
        Just(json!("025B7A68B4CD85668E65DB6A343A4C607A462CDD010DAA793F82BE561A3316C5B1")),
        Just(json!(format!("02{:064x}", 5))),
        Just(json!(format!("04{}", "ab".repeat(32)))),
        Just(json!("x".repeat(300))),
        Just(json!({"app": "ZEUS", "app_version": "v0.12.0"})),
        Just(json!({"pad": "y".repeat(2100)})),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_]{0,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn raw_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-0".to_string()),
        Just("1e6".to_string()),
        Just("1E6".to_string()),
        Just("8e0".to_string()),
        Just("1.0".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551616".to_string()),
        Just("18446744073709551615".to_string()),
        Just("-9223372036854775809".to_string()),
        Just("99999999999999999999999999999".to_string()),
        "-?[0-9]{1,25}(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?",
    ]
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![4 => json_value().prop_map(Field::Json), 1 => raw_number().prop_map(Field::Raw)]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (0..FIELDS.len()).prop_map(Mutation::Remove),
        4 => (0..FIELDS.len(), field()).prop_map(|(i, f)| Mutation::Set(i, f)),
        1 => ("[a-z_]{1,12}", field()).prop_map(|(k, f)| Mutation::Add(k, f)),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        8 => proptest::collection::vec(mutation(), 0..4).prop_map(Body::Mutated),
        1 => (0usize..400).prop_map(Body::Truncated),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Body::Bytes),
        1 => json_value().prop_map(Body::AnyJson),
        1 => prop_oneof![60_000usize..65_536, 65_536usize..70_000].prop_map(Body::Padded),
    ]
}

fn query() -> impl Strategy<Value = Query> {
    let text = prop_oneof![
        "[0-9a-f-]{0,70}",
        "\\PC{0,40}",
        Just("00000000-0000-4000-8000-000000000000".to_string()),
        Just("x".repeat(64)),
        Just("x".repeat(65)),
    ];
    let id = prop_oneof![2 => any::<usize>().prop_map(IdValue::Known), 3 => text.prop_map(IdValue::Text)];
    let extra = proptest::collection::vec(("[a-z_]{1,10}", "[a-z0-9]{0,6}"), 0..2);
    prop_oneof![
        1 => Just(Query::None),
        6 => (id, extra).prop_map(|(id, extra)| Query::Id { id, extra }),
        2 => "[A-Za-z0-9%=&+;._~!$'()*,:@/?-]{0,80}".prop_map(Query::Raw),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let ctype = prop_oneof![
        8 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => Just(None),
        1 => Just(Some("text/plain")),
    ];
    prop_oneof![
        3 => (ctype, body()).prop_map(|(content_type, body)| Input::CreateOrder { content_type, body }),
        2 => query().prop_map(|query| Input::GetOrder { query }),
    ]
}

/// Percent-encode everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn render_field(f: &Field, raws: &mut Vec<String>) -> Value {
    match f {
        Field::Json(v) => v.clone(),
        Field::Raw(r) => {
            raws.push(r.clone());
            json!(format!("@@RAW{}@@", raws.len() - 1))
        }
    }
}

/// The body's bytes (and, when it is JSON text, its parsed value).
fn render_body(b: &Body, base: &Value) -> Vec<u8> {
    match b {
        Body::Mutated(ms) => {
            let mut v = base.clone();
            let o = v.as_object_mut().unwrap();
            let mut raws = vec![];
            for m in ms {
                match m {
                    Mutation::Remove(i) => {
                        o.remove(FIELDS[*i]);
                    }
                    Mutation::Set(i, f) => {
                        o.insert(FIELDS[*i].to_string(), render_field(f, &mut raws));
                    }
                    Mutation::Add(k, f) => {
                        o.insert(k.clone(), render_field(f, &mut raws));
                    }
                }
            }
            let mut text = v.to_string();
            for (i, r) in raws.iter().enumerate() {
                text = text.replace(&format!("\"@@RAW{i}@@\""), r);
            }
            text.into_bytes()
        }
        Body::Truncated(n) => {
            let t = base.to_string();
            t.as_bytes()[..(*n).min(t.len())].to_vec()
        }
        Body::Bytes(b) => b.clone(),
        Body::AnyJson(v) => v.to_string().into_bytes(),
        Body::Padded(n) => {
            let mut v = base.clone();
            v["client_info"] = json!({"pad": ""});
            let len = v.to_string().len();
            v["client_info"]["pad"] = json!("z".repeat(n.saturating_sub(len)));
            v.to_string().into_bytes()
        }
    }
}

fn target(q: &Query, known: &[String]) -> String {
    match q {
        Query::None => GET_ORDER.to_string(),
        Query::Id { id, extra } => {
            let id = match id {
                IdValue::Known(i) if !known.is_empty() => known[i % known.len()].clone(),
                IdValue::Known(_) => String::new(),
                IdValue::Text(t) => t.clone(),
            };
            let mut t = format!("{GET_ORDER}?order_id={}", encode(&id));
            for (k, v) in extra {
                t.push_str(&format!("&{k}={v}"));
            }
            t
        }
        Query::Raw(r) => format!("{GET_ORDER}?{r}"),
    }
}

fn judge(method: &str, path: &str, sent: Option<&[u8]>, r: &Resp) -> Result<(), String> {
    if r.status >= 500 {
        return Err(format!("HTTP {} (5xx): {}", r.status, r.text()));
    }
    openapi().check(method, path, r)?;
    if let (Some(body), 200) = (sent, r.status) {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("an order from a body that is not JSON: {e}"))?;
        let schema = "/paths/~1api~1v1~1create_order/post/requestBody/content/application~1json/schema";
        openapi().validate(schema, &v).map_err(|e| format!("an order from a body the document refuses: {e}"))?;
    }
    Ok(())
}

#[test]
fn rest_api_fuzz_never_5xx_and_always_documented() {
    let cases: u32 = std::env::var("REST_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The stand-in's child process and tasks live in this runtime's context.
    let _enter = rt.enter();
    let (_, pk) = peer(60);
    let (s, api) = rt.block_on(async {
        let s = builder().option("lsps1-token", json!(["vip"])).start().await;
        let addrs = listening(&s).await;
        (s, Api::new(addrs[0]))
    });
    let base = zeus_body(&pk);
    // One order to read back.
    let first = rt.block_on(api.create_order(&base));
    assert_eq!(first.status, 200, "{}", first.text());
    let known = std::sync::Mutex::new(vec![first.json()["order_id"].as_str().unwrap().to_string()]);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<(&str, u16), u32>::new());

    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let outcome = runner.run(&input(), |inp| {
        let host = api.host();
        let (path, raw, sent) = match &inp {
            Input::CreateOrder { content_type, body } => {
                let bytes = render_body(body, &base);
                let mut headers = vec![];
                if let Some(c) = content_type {
                    headers.push(("Content-Type", *c));
                }
                (CREATE.to_string(), build_request("POST", CREATE, &host, &headers, &bytes), Some(bytes))
            }
            Input::GetOrder { query } => {
                let t = target(query, &known.lock().unwrap());
                let raw = build_request("GET", &t, &host, &[], b"");
                (t, raw, None)
            }
        };
        let method = if sent.is_some() { "POST" } else { "GET" };
        let r = rt.block_on(api.exchange(&raw)).map_err(TestCaseError::fail)?;
        let route = path.split('?').next().unwrap_or(&path).to_string();
        judge(method, &route, sent.as_deref(), &r).map_err(|e| {
            TestCaseError::fail(format!("{method} {}: {e}", path.chars().take(200).collect::<String>()))
        })?;
        *statuses.lock().unwrap().entry((method, r.status)).or_default() += 1;
        if method == "POST" && r.status == 200 {
            known.lock().unwrap().push(r.json()["order_id"].as_str().unwrap_or_default().to_string());
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // The plugin is still alive and serving.
    let health = rt.block_on(api.get("/api/v1/health"));
    assert_eq!(health.status, 200);
    assert!(s.disabled().is_none());
    let statuses = statuses.into_inner().unwrap();
    eprintln!("rest fuzz: {cases} cases, {} orders created; answers {statuses:?}", known.lock().unwrap().len());
    if cases >= 100 {
        // The generator reaches the main outcomes (with overwhelming probability).
        for want in [("POST", 200), ("POST", 400), ("POST", 415), ("GET", 200), ("GET", 400), ("GET", 404)] {
            assert!(statuses.contains_key(&want), "never saw {want:?}: {statuses:?}");
        }
    }
    rt.block_on(async move { drop(s) });
}
