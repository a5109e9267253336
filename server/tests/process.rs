//! The `rally` binary as an operator runs it: bad settings, busy ports, signals, log lines.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RALLY: &str = env!("CARGO_BIN_EXE_rally");

/// A `rally` command with a fresh data dir and a minimal site root, no inherited RALLY_* or RUST_LOG.
fn rally(dir: &tempfile::TempDir) -> Command {
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("pkg")).unwrap();
    let mut cmd = Command::new(RALLY);
    for (key, _) in std::env::vars() {
        if key.starts_with("RALLY_") || key.starts_with("LEPTOS_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("RALLY_DATA_DIR", dir.path().join("data"))
        .env("RALLY_SITE_ROOT", site)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_to_end(mut cmd: Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_settings_exit_2_with_one_line_naming_setting_and_choices() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = rally(&dir);
    cmd.env("RALLY_LOG_FORMAT", "xml");
    let (code, stderr) = run_to_end(cmd);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        "rally: invalid value \"xml\" for --log-format (RALLY_LOG_FORMAT): expected one of: text, json"
    );

    let mut cmd = rally(&dir);
    cmd.arg("--addr").arg("localhost");
    let (code, stderr) = run_to_end(cmd);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--addr (RALLY_ADDR)"), "{stderr}");

    let mut cmd = rally(&dir);
    cmd.env("RUST_LOG", "rally=loud");
    let (code, stderr) = run_to_end(cmd);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("rally: invalid value \"rally=loud\" for RUST_LOG"),
        "{stderr}"
    );
}

#[test]
fn version_names_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = rally(&dir);
    cmd.arg("--version");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed = String::from_utf8_lossy(&out.stdout);
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let commit = if commit.is_empty() {
        "unknown".to_owned()
    } else {
        commit
    };
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    assert_eq!(
        printed.trim_end(),
        format!(
            "rally {} (commit {commit}, {profile} build)",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// Wait for the JSON startup line and return the address the server bound.
fn started_addr(child: &mut Child) -> (String, BufReader<std::process::ChildStderr>) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("rally exited before starting");
        }
        let record: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        if record["message"] == "rally started" {
            return (record["addr"].as_str().unwrap().to_owned(), stderr);
        }
    }
    panic!("no startup line within 20 s");
}

#[test]
fn a_busy_port_is_reported_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = rally(&dir);
    cmd.env("RALLY_ADDR", addr.to_string());
    let (code, stderr) = run_to_end(cmd);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("address already in use"),
        "{stderr}"
    );
}

#[test]
fn sigterm_exits_0_and_only_lifecycle_lines_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = rally(&dir);
    cmd.env("RALLY_ADDR", "127.0.0.1:0")
        .env("RALLY_LOG_FORMAT", "json");
    let mut child = cmd.spawn().unwrap();
    let (addr, mut stderr) = started_addr(&mut child);

    // Some routine traffic, which must not produce a single log line at the default level.
    for path in ["/healthz", "/readyz", "/", "/api/nothing", "/missing"] {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 "), "{response}");
    }

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "rally did not exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let messages: Vec<String> = rest
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).expect("json log line");
            format!(
                "{} {}",
                record["level"].as_str().unwrap(),
                record["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(messages, ["INFO rally shutting down", "INFO rally stopped"]);
}

#[test]
fn an_unreachable_redis_is_reported_and_exits_1() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = rally(&dir);
    cmd.env(
        "RALLY_REDIS_URL",
        format!("redis://:secret@127.0.0.1:{port}"),
    );
    let (code, stderr) = run_to_end(cmd);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is never printed: {stderr}"
    );
}
