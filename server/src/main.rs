//! `gateway --config FILE [--listen ADDR]`: load the configuration, start, serve until
//! SIGTERM / Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use gateway::config::{Cli, Config, DEMO_MODELS, ProcessEnv};
use gateway::startup::{Application, shutdown_signal};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), cli.listen, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let _log_guard = gateway::telemetry::init(config.server.log_format);
    // The demo without GATEWAY_MASTER_KEY gets a fresh random key, shown on the terminal
    // below (never logged), so a first run needs no set-up at all.
    if config.demo && config.server.master_key.is_none() {
        let mut raw = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        config.server.master_key =
            Some(SecretString::from(format!("sk-demo-{}", hex::encode(raw))));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let demo_key = config
            .demo
            .then(|| {
                config
                    .server
                    .master_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_owned())
            })
            .flatten();
        let app = match Application::build(config).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("gateway: cannot start: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let url = format!("http://{}", app.addr());
        tracing::info!(%url, database = app.state().store.kind(), "gateway listening");
        if let Some(key) = demo_key {
            print_demo_banner(&url, &key);
        }
        match app.run_until_stopped(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn print_demo_banner(url: &str, key: &str) {
    println!(
        "\nAI Gateway demo is running at {url}\n\
         \n  database : SQLite file gateway.db in this directory\n  models   : {models} (the built-in mock provider)\n  \
         master key (this run only; set GATEWAY_MASTER_KEY to choose one): {key}\n\
         \nCall it:\n  curl {url}/v1/chat/completions \\\n    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    \
         -d '{{\"model\":\"{chat}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello there\"}}]}}'\n\
         \nConsole: {url}/ (first run: {url}/setup, with the master key above)\n",
        models = DEMO_MODELS.join(", "),
        chat = DEMO_MODELS[0],
    );
}
