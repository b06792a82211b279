//! `cln-lsps1`: the plugin binary. lightningd starts it (`plugin=` / `plugin-dir=`) and
//! speaks to it over stdin/stdout.

use std::process::ExitCode;

fn main() -> ExitCode {
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
