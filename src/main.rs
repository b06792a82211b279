//! `cln-lsps1`: the plugin binary. lightningd starts it (`plugin=` / `plugin-dir=`) and
//! speaks to it over stdin/stdout.

use std::process::ExitCode;

/// `cln-lsps1 copy-store FROM TO [--password-file F]`: move an order book between SQLite
/// and PostgreSQL (see README, "Several nodes, one order book").
fn copy_store(args: &[String]) -> ExitCode {
    let (mut names, mut password) = (vec![], None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--password-file" {
            match it.next().map(std::fs::read_to_string) {
                Some(Ok(p)) => password = Some(p.trim_end_matches(['\r', '\n']).to_string()),
                _ => {
                    eprintln!("copy-store: --password-file needs a readable file");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            names.push(a.clone());
        }
    }
    let [from, to] = names.as_slice() else {
        eprintln!("usage: cln-lsps1 copy-store FROM TO [--password-file FILE]");
        eprintln!("  FROM, TO: an SQLite file (path or sqlite:path) or postgres://user@host:port/db");
        return ExitCode::FAILURE;
    };
    let open = |n: &str, pw: Option<&str>| {
        cln_lsps1::store::copy::open_named(n, pw).map_err(|e| eprintln!("copy-store: cannot open {n}: {e}"))
    };
    let pw_for = |n: &str| if n.starts_with("postgres") { password.as_deref() } else { None };
    let (Ok(src), Ok(dst)) = (open(from, pw_for(from)), open(to, pw_for(to))) else { return ExitCode::FAILURE };
    match cln_lsps1::store::copy::copy_store(&src, &dst) {
        Ok(report) => {
            for (table, rows) in report {
                println!("{table:<18} {rows:>10} rows copied and counted");
            }
            println!("copied {} to {}", src.shown(), dst.shown());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("copy-store: nothing was copied: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("copy-store") {
        return copy_store(&args[1..]);
    }
    // The level filter of the log bridge to lightningd (cln-plugin reads CLN_PLUGIN_LOG). Set before
    // any thread starts; lightningd still shows debug lines only with --log-level=debug.
    if std::env::var_os("CLN_PLUGIN_LOG").is_none() {
        // SAFETY: single-threaded here: the runtime is built below.
        unsafe { std::env::set_var("CLN_PLUGIN_LOG", "cln_lsps1=debug,cln_plugin=info,cln_rpc=info,warn") };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cln-lsps1: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cln_lsps1::cln::run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stderr ends up in lightningd's log; stdout belongs to the protocol.
            eprintln!("cln-lsps1: {e:#}");
            ExitCode::FAILURE
        }
    }
}
