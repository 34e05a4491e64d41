//! The `tether` command: see `tether --help` and README.md.

use std::process::ExitCode;

use clap::Parser;
use examples::cli::{Cli, render_clap_error};

fn main() -> ExitCode {
    // One line, never a backtrace, even for a bug.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "tether: internal error{place}: {}",
            examples::error::one_line(&message)
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let (text, code) = render_clap_error(&e);
            if code == 0 {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            return ExitCode::from(code);
        }
    };
    if let Err(e) = examples::logging::init(&cli.log) {
        return e.report();
    }
    // kube's and object_store's TLS both use rustls; pick ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return examples::CliError::runtime(format!("cannot start the runtime: {e}")).report();
        }
    };
    let result = runtime.block_on(examples::commands::run(cli));
    // Do not wait for blocking tasks (a stuck filesystem read) on exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}
