//! The stand-in's runes: `createrune` and `checkrune` answering like lightningd v26.06.6
//! (fixtures `rpc/createrune.*`, `rpc/checkrune.*`; README "Observations: runes").
//!
//! A rune is base64url of 32 authentication bytes and its restrictions, `=<unique id>` first,
//! then `&`-separated restrictions whose `|`-separated alternatives are `<field><op><value>`
//! (the recorded `createrune.ok-lsps1-read-only.json` decodes to
//! `=1&method^lsps1-list|method^lsps1-get|method=lsps1-status`). Here the 32 bytes are
//! SHA-256 of this node's secret and the text, so runes of another node (or edited ones)
//! fail with 1501 as lightningd's do.

use bitcoin::base64::Engine as _;
use bitcoin::hashes::{Hash, sha256};
use serde_json::{Value, json};

const B64: bitcoin::base64::engine::GeneralPurpose = bitcoin::base64::engine::general_purpose::URL_SAFE;

/// The runes a stand-in node made.
pub struct Runes {
    secret: [u8; 32],
    next_id: u64,
}

fn auth(secret: &[u8; 32], text: &str) -> [u8; 32] {
    let mut data = secret.to_vec();
    data.extend_from_slice(text.as_bytes());
    sha256::Hash::hash(&data).to_byte_array()
}

/// The `restrictions` param as text: an array of arrays (OR inside, AND between), or
/// `"readonly"` (fixtures `createrune.ok-restrictions-readonly.json`).
fn restrictions_text(v: Option<&Value>) -> Result<String, Value> {
    let bad = || json!({"code": -32602, "message": "restrictions: should be an array of restrictions"});
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s == "readonly" => {
            Ok("&method^list|method^get|method=summary&method/listdatastore".into())
        }
        Some(Value::Array(outer)) => {
            let mut text = String::new();
            for inner in outer {
                let alts: Vec<&str> = match inner {
                    Value::Array(a) => a.iter().map(|x| x.as_str().ok_or_else(bad)).collect::<Result<_, _>>()?,
                    Value::String(s) => vec![s.as_str()],
                    _ => return Err(bad()),
                };
                text.push('&');
                text.push_str(&alts.join("|"));
            }
            Ok(text)
        }
        _ => Err(bad()),
    }
}

impl Runes {
    pub fn new(secret: [u8; 32]) -> Self {
        Runes { secret, next_id: 0 }
    }

    /// `createrune [rune] [restrictions]`.
    pub fn create(&mut self, params: &Value) -> Result<Value, Value> {
        let base = params.get("rune").and_then(Value::as_str);
        let more = restrictions_text(params.get("restrictions"))?;
        let (text, id) = match base {
            Some(r) => {
                let (_, text) = self.verify(r)?;
                let id = text.trim_start_matches('=').split('&').next().unwrap_or("0").to_string();
                (format!("{text}{more}"), id)
            }
            None => {
                let id = self.next_id;
                self.next_id += 1;
                (format!("={id}{more}"), id.to_string())
            }
        };
        let mut bytes = auth(&self.secret, &text).to_vec();
        bytes.extend_from_slice(text.as_bytes());
        let mut r = json!({"rune": B64.encode(bytes), "unique_id": id});
        if !text.contains('&') {
            r["warning_unrestricted_rune"] = json!(
                "WARNING: This rune has no restrictions! Anyone who has access to this rune could drain funds from your node. Be careful when giving this to apps that you don't trust. Consider using the restrictions parameter to only allow access to specific rpc methods."
            );
        }
        Ok(r)
    }

    fn verify(&self, rune: &str) -> Result<(Vec<u8>, String), Value> {
        let not_base64 =
            || json!({"code": -32602, "message": format!("rune: should be base64 string: invalid token '\"{rune}\"'")});
        let bytes = B64
            .decode(
                rune.trim_end_matches('=').to_string() + &"=".repeat((4 - rune.trim_end_matches('=').len() % 4) % 4),
            )
            .map_err(|_| not_base64())?;
        if bytes.len() < 33 {
            return Err(not_base64());
        }
        let text = String::from_utf8(bytes[32..].to_vec()).map_err(|_| not_base64())?;
        if !text.starts_with('=') {
            return Err(not_base64());
        }
        if bytes[..32] != auth(&self.secret, &text) {
            return Err(json!({"code": 1501, "message": "Not authorized: Not derived from master"}));
        }
        Ok((bytes, text))
    }

    /// `checkrune rune [nodeid] [method] [params]`.
    pub fn check(&self, params: &Value) -> Result<Value, Value> {
        let Some(rune) = params.get("rune").and_then(Value::as_str) else {
            return Err(json!({"code": -32602, "message": "missing required parameter: rune"}));
        };
        let (_, text) = self.verify(rune)?;
        let method = params.get("method").and_then(Value::as_str);
        let nodeid = params.get("nodeid").and_then(Value::as_str);
        let args = params.get("params").cloned().unwrap_or(Value::Null);
        for restriction in text.split('&').skip(1) {
            let mut failures = vec![];
            let mut passed = false;
            for alt in restriction.split('|') {
                match check_one(alt, method, nodeid, &args) {
                    Ok(()) => {
                        passed = true;
                        break;
                    }
                    Err(english) => failures.push(english),
                }
            }
            if !passed {
                return Err(json!({"code": 1502, "message": format!("Not permitted: {}", failures.join(" AND "))}));
            }
        }
        Ok(json!({"valid": true}))
    }
}

/// One alternative: `Ok` when it holds, else its failure in lightningd's English.
fn check_one(alt: &str, method: Option<&str>, nodeid: Option<&str>, args: &Value) -> Result<(), String> {
    let Some(at) = alt.find(|c: char| "=/^$~<>{}#!".contains(c)) else {
        return Err(format!("{alt}: unknown condition"));
    };
    let (field, op, value) = (&alt[..at], &alt[at..at + 1], &alt[at + 1..]);
    if op == "#" {
        return Ok(());
    }
    let actual: Option<String> = match field {
        "method" => method.map(str::to_owned),
        "id" => nodeid.map(str::to_owned),
        f if f.starts_with("pname") => {
            args.get(&f[5..]).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        }
        f if f.starts_with("parr") => f[4..]
            .parse::<usize>()
            .ok()
            .and_then(|i| args.get(i))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
        _ => None,
    };
    if op == "!" {
        return match actual {
            None => Ok(()),
            Some(_) => Err(format!("{field} is present")),
        };
    }
    let Some(actual) = actual else { return Err(format!("{field} not present")) };
    let ok = match op {
        "=" => actual == value,
        "/" => actual != value,
        "^" => actual.starts_with(value),
        "$" => actual.ends_with(value),
        "~" => actual.contains(value),
        "<" => actual.parse::<i64>().ok().zip(value.parse::<i64>().ok()).is_some_and(|(a, b)| a < b),
        ">" => actual.parse::<i64>().ok().zip(value.parse::<i64>().ok()).is_some_and(|(a, b)| a > b),
        "{" => actual.as_str() < value,
        "}" => actual.as_str() > value,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(match op {
        "=" => format!("{field} is not equal to {value}"),
        "/" => format!("{field} is equal to {value}"),
        "^" => format!("{field} does not start with {value}"),
        "$" => format!("{field} does not end with {value}"),
        "~" => format!("{field} does not contain {value}"),
        "<" => format!("{field} is greater or equal to {value}"),
        ">" => format!("{field} is less than or equal to {value}"),
        _ => format!("{field} fails {op}{value}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        crate::standin::fixture(&format!("rpc/{name}"))
    }

    #[test]
    fn answers_like_the_recordings() {
        let mut r = Runes::new([7; 32]);
        let ro = r
            .create(&json!({"restrictions": [["method^lsps1-list", "method^lsps1-get", "method=lsps1-status"]]}))
            .unwrap()["rune"]
            .as_str()
            .unwrap()
            .to_string();
        let all =
            r.create(&json!({"restrictions": [["method^lsps1-"]]})).unwrap()["rune"].as_str().unwrap().to_string();
        let check = |rune: &str, method: Option<&str>| {
            let mut p = json!({"rune": rune, "params": {}});
            if let Some(m) = method {
                p["method"] = json!(m);
            }
            r.check(&p)
        };
        assert_eq!(
            check(&ro, Some("lsps1-listorders")).unwrap(),
            fixture("checkrune.ok-read-only-lsps1-listorders.json")["result"]
        );
        assert_eq!(
            check(&ro, Some("lsps1-cancelorder")).unwrap_err(),
            fixture("checkrune.err-read-only-lsps1-cancelorder.json")["error"]
        );
        assert_eq!(check(&ro, None).unwrap_err(), fixture("checkrune.err-read-only-no-method.json")["error"]);
        assert_eq!(check(&all, Some("getinfo")).unwrap_err(), fixture("checkrune.err-lsps1-all-getinfo.json")["error"]);
        assert_eq!(check("garbage", Some("getinfo")).unwrap_err(), fixture("checkrune.err-garbage-rune.json")["error"]);
        // A rune another node made (the recorded one) is not ours.
        let theirs = fixture("createrune.ok-lsps1-read-only.json")["result"]["rune"].as_str().unwrap().to_string();
        assert_eq!(
            check(&theirs, Some("lsps1-status")).unwrap_err(),
            fixture("checkrune.err-rune-of-another-node.json")["error"]
        );
    }
}
