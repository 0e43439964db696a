//! The `gateway` binary's contract: config errors name file and field and stop start-up;
//! no config runs the demo and says how to call it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

#[test]
fn bad_config_stops_startup_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[server]\nmaster_key = \"0123456789abcdef0\"\n[[deployments]]\nmodel = \"m\"\nprovider = \"mock\"\ncolour = \"blue\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env_remove("GATEWAY_MASTER_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.toml")
            && err.contains("deployments[0]")
            && err.contains("unknown field `colour`"),
        "{err}"
    );

    std::fs::write(&path, "[[deployments]]\nmodel = \"m\"\nprovider = \"openai\"\napi_key = \"${NOT_SET_ANYWHERE_42}\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployments[0].api_key") && err.contains("NOT_SET_ANYWHERE_42 is not set"),
        "{err}"
    );

    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn no_config_runs_the_demo_and_prints_how_to_call_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("GATEWAY_MASTER_KEY")
        .env_remove("DATABASE_URL")
        .env("GATEWAY_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut url = None;
    let mut curl = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("AI Gateway demo is running at ") {
            url = Some(rest.trim().to_owned());
        }
        if line.contains("curl ") {
            curl = true;
        }
        if line.starts_with("Console:") {
            break;
        }
    }
    let url = url.expect("banner names the URL");
    assert!(curl, "banner shows a curl example");
    assert!(
        dir.path().join("gateway.db").exists(),
        "SQLite in the working directory"
    );
    let body = reqwest::blocking::get(format!("{url}/health/ready"))
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("\"ok\""), "{body}");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM stops the demo cleanly: {status:?}"
    );
}
