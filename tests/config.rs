//! Configuration as operators expect it: every flag has a file key, an environment variable and
//! a help heading (checked against clap's `Command`, so a flag added later is covered); a flag
//! wins over the environment, which wins over the file (`--print-config` of the binary); an
//! unknown key or a bad value names the file, the line and the key; the example file is the
//! one `config::example()` renders and parses; `--processes` children read the same file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgecomet::config::file::{file_settings, file_values, settings};
use edgecomet::config::{Config, command, env_name, example};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of this test's own in the target directory (removed on drop).
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join(format!("{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The binary with no EDGECOMET_* variable from the test's environment.
fn edgecomet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgecomet"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("EDGECOMET_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("run edgecomet");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `key = value  # source` lines of `--print-config`, as (value, source) by key.
fn printed(stdout: &str) -> std::collections::BTreeMap<String, (String, String)> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
        .map(|l| {
            let (kv, source) = l.rsplit_once(" # ").unwrap();
            let (k, v) = kv.split_once(" = ").unwrap();
            (
                k.trim().to_string(),
                (v.trim().to_string(), source.trim().to_string()),
            )
        })
        .collect()
}

#[test]
fn every_flag_has_a_file_key_an_environment_variable_and_a_heading() {
    let cmd = command();
    let mut n = 0;
    for a in settings(&cmd) {
        let long = a.get_long().unwrap();
        let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
        assert_eq!(env.as_deref(), Some(env_name(long).as_str()), "--{long}");
        assert!(
            a.get_help_heading().is_some(),
            "--{long} has no help_heading: give it one of -h's groups"
        );
        n += 1;
    }
    assert!(n > 50, "only {n} settings");
    // Every setting but --config has a key the file accepts, with `-` or `_`, and the flag's
    // default (or, without one, the example's placeholder is refused by the flag's parser
    // only, not as an unknown key).
    for a in file_settings(&cmd) {
        let long = a.get_long().unwrap();
        let switch = matches!(a.get_action(), clap::ArgAction::SetTrue);
        let value = match a.get_default_values().first() {
            _ if switch => "true".to_string(),
            Some(d) => format!("{:?}", d.to_string_lossy()),
            None => "\"\"".to_string(),
        };
        for key in [long.to_string(), long.replace('-', "_")] {
            let text = format!("{key} = {value}\n");
            match file_values(&cmd, Path::new("t.toml"), &text) {
                Ok(v) => assert_eq!(v.len(), 1, "{text}"),
                Err(e) => assert!(
                    !switch && !e.contains("unknown key") && a.get_default_values().is_empty(),
                    "{text}: {e}"
                ),
            }
        }
    }
}

#[test]
fn precedence_is_file_then_environment_then_flags() {
    let file = TempFile::new(
        "precedence.toml",
        "max-connections = 1111\nhead-timeout = \"2s\"\nhistory = 3\n\
         allow-origin = [\"https://a.test\", \"https://b.test\"]\nclient-publish = true\n\
         publish-key = [\"file-key-0123456789\"]\n",
    );
    let (out, stdout, stderr) = run(edgecomet()
        .arg("--config")
        .arg(&file.0)
        .args(["--print-config", "--history", "6"])
        .env("EDGECOMET_HEAD_TIMEOUT", "4s")
        .env("EDGECOMET_HISTORY", "5")
        .env("EDGECOMET_ALLOW_ORIGIN", "https://c.test,https://d.test")
        .env("EDGECOMET_WORKERS", "3"));
    assert!(out.status.success(), "{stderr}");
    let p = printed(&stdout);
    let get = |k: &str| p.get(k).cloned().unwrap_or_else(|| panic!("{k}: {stdout}"));
    assert_eq!(get("max-connections"), ("1111".into(), "file".into()));
    assert_eq!(
        get("head-timeout"),
        ("\"4s\"".into(), "EDGECOMET_HEAD_TIMEOUT".into())
    );
    assert_eq!(get("history"), ("6".into(), "flag".into()));
    assert_eq!(
        get("allow-origin").0,
        "[\"https://c.test\", \"https://d.test\"]"
    );
    assert_eq!(get("workers"), ("3".into(), "EDGECOMET_WORKERS".into()));
    assert_eq!(get("client-publish"), ("true".into(), "file".into()));
    assert_eq!(get("listen"), ("\"0.0.0.0:8080\"".into(), "default".into()));
    // A secret is never printed, wherever it came from.
    assert_eq!(
        get("publish-key"),
        ("[\"(redacted)\"]".into(), "file".into())
    );
    assert!(!stdout.contains("file-key-0123456789"));
    // Every setting is printed (set, or commented out as unset).
    for a in file_settings(&command()) {
        let key = a.get_long().unwrap();
        assert!(
            p.contains_key(key) || stdout.contains(&format!("# {key} = (unset)")),
            "{key} missing from --print-config"
        );
    }
    // The environment's secrets too.
    let (_, stdout, _) = run(edgecomet().arg("--print-config").env(
        "EDGECOMET_TOKEN_SECRET",
        "env-secret-0123456789abcdef0123456789",
    ));
    assert!(!stdout.contains("env-secret"), "{stdout}");
    assert_eq!(printed(&stdout)["token-secret"].0, "[\"(redacted)\"]");
}

#[test]
fn print_config_output_is_a_config_file_giving_the_same_settings() {
    let (out, first, stderr) = run(edgecomet().args([
        "--print-config",
        "--max-connections",
        "42",
        "--allow-origin",
        "https://a.test,https://b.test",
        "--client-publish",
        "--bayeux-path",
        "/bay \"eux\"",
        "--token-audience",
        "007",
        "--max-queued-bytes",
        "256KiB",
    ]));
    assert!(out.status.success(), "{stderr}");
    let file = TempFile::new("printed.toml", &first);
    let (out, second, stderr) = run(edgecomet()
        .arg("--config")
        .arg(&file.0)
        .arg("--print-config"));
    assert!(out.status.success(), "{stderr}\n{first}");
    let values = |s: &str| -> Vec<(String, String)> {
        printed(s).into_iter().map(|(k, (v, _))| (k, v)).collect()
    };
    assert_eq!(values(&first), values(&second));
    assert_eq!(printed(&second)["max-connections"].1, "file");
}

#[test]
fn a_file_with_secrets_that_others_may_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let file = TempFile::new(
        "secret.toml",
        "publish-key = [\"0123456789abcdef-secret\"]\n",
    );
    std::fs::set_permissions(&file.0, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (out, stdout, stderr) = run(edgecomet()
        .arg("--config")
        .arg(&file.0)
        .arg("--print-config"));
    assert!(out.status.success());
    assert!(
        stderr.contains("holds secrets (publish-key) and others may read it (mode 644)"),
        "{stderr}"
    );
    assert!(!stdout.contains("abcdef") && !stderr.contains("abcdef"));
    std::fs::set_permissions(&file.0, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, _, stderr) = run(edgecomet()
        .arg("--config")
        .arg(&file.0)
        .arg("--print-config"));
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn old_millisecond_flag_names_still_work() {
    let (out, stdout, stderr) = run(edgecomet().args([
        "--print-config",
        "--shutdown-timeout-ms",
        "250",
        "--accept-pause",
        "1s",
        "--broker-linger-ms",
        "2s",
    ]));
    assert!(out.status.success(), "{stderr}");
    let p = printed(&stdout);
    assert_eq!(p["shutdown-timeout"].0, "250");
    assert_eq!(p["accept-pause"].0, "\"1s\"");
    assert_eq!(p["broker-linger"].0, "\"2s\"");
    let l = Config::load_from(["edgecomet", "--shutdown-timeout-ms", "250"]).unwrap();
    assert_eq!(l.config.shutdown_timeout_ms, 250);
    let l = Config::load_from(["edgecomet", "--shutdown-timeout", "2s"]).unwrap();
    assert_eq!(l.config.shutdown_timeout_ms, 2000);
    let l = Config::load_from([
        "edgecomet",
        "--head-timeout",
        "2m",
        "--max-body-bytes",
        "4KiB",
    ])
    .unwrap();
    assert_eq!(
        (l.config.head_timeout, l.config.max_body_bytes),
        (120, 4096)
    );
}

#[test]
fn unknown_keys_and_bad_values_name_the_file_line_and_key() {
    let cmd = command();
    let p = Path::new("/etc/edgecomet.toml");
    let err = |text: &str| file_values(&cmd, p, text).unwrap_err();
    let e = err("# a comment\nlisten = \"127.0.0.1:1\"\n\nmax-conections = 5\n");
    assert!(
        e.starts_with("/etc/edgecomet.toml:4: unknown key \"max-conections\""),
        "{e}"
    );
    assert!(e.ends_with("did you mean \"max-connections\"?"), "{e}");
    let e = err("max-headers = 64\nhead_timeout = \"1500ms\"\n");
    assert!(
        e.starts_with("/etc/edgecomet.toml:2: key \"head_timeout\": invalid value '1500ms' for '--head-timeout <DURATION>'"),
        "{e}"
    );
    assert!(e.contains("whole number of seconds"), "{e}");
    for (text, words) in [
        ("max-headers = 129", "129 is not in 1..=128"),
        ("max-body-bytes = \"1 parsec\"", "unknown unit"),
        ("max-body-bytes = 1.5", "not a number this flag takes"),
        ("client-publish = \"yes\"", "expected true or false"),
        ("history = true", "not a switch"),
        ("listen = [\"a\"]", "not an array"),
        ("[tls]\nlisten = \"x\"", "not a table"),
        (
            "listen = \"nowhere\"",
            "invalid value 'nowhere' for '--listen <ADDR>'",
        ),
        ("max-headers = 1\nmax_headers = 2", "set already on line 1"),
        ("config = \"other.toml\"", "unknown key"),
        ("print-config = true", "unknown key"),
        ("max-headers = ", "not TOML"),
    ] {
        let e = err(text);
        assert!(e.contains(words), "{text}: {e}");
        assert!(e.starts_with("/etc/edgecomet.toml:"), "{text}: {e}");
    }
    // The same from the binary: one line on stderr, exit status 2, nothing started.
    let file = TempFile::new("bad.toml", "workers = 2\n\nws-pong-timeout = \"ten\"\n");
    let (out, _, stderr) = run(edgecomet().arg("--config").arg(&file.0));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:3: key \"ws-pong-timeout\": invalid value 'ten' for '--ws-pong-timeout <DURATION>'",
            file.0.display()
        )),
        "{stderr}"
    );
    let (out, _, stderr) = run(edgecomet().args(["--config", "/nonexistent/edgecomet.toml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("--config /nonexistent/edgecomet.toml"),
        "{stderr}"
    );
}

#[test]
fn environment_values_are_checked_like_flags() {
    let (out, _, stderr) = run(edgecomet()
        .arg("--print-config")
        .env("EDGECOMET_HEAD_TIMEOUT", "1500ms"));
    assert!(!out.status.success());
    assert!(stderr.contains("whole number of seconds"), "{stderr}");
    // Switches take true/false, 1/0, yes/no, on/off from the environment.
    for (v, want) in [
        ("1", "true"),
        ("yes", "true"),
        ("0", "false"),
        ("off", "false"),
    ] {
        let (out, stdout, stderr) = run(edgecomet()
            .arg("--print-config")
            .env("EDGECOMET_CLIENT_PUBLISH", v));
        assert!(out.status.success(), "{stderr}");
        assert_eq!(printed(&stdout)["client-publish"].0, want, "{v}");
    }
}

/// The committed example with every `# key = value` line that has a real value uncommented.
fn example_uncommented(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ")
                .is_some_and(|(k, v)| !k.contains(' ') && !v.contains("\"<"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn example_file_is_current_lists_every_key_and_parses() {
    let path = root().join("edgecomet.example.toml");
    let want = example();
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "edgecomet.example.toml is not what `config::example()` renders from the flags; \
         run `BLESS=1 cargo test --test config example` and commit it"
    );
    let cmd = command();
    for a in file_settings(&cmd) {
        let key = a.get_long().unwrap();
        assert!(
            have.contains(&format!("\n# {key} = ")),
            "{key} missing from the example"
        );
    }
    // As committed (every key commented out) it parses; with every key that has a default
    // uncommented, it parses and gives the defaults.
    assert!(file_values(&cmd, &path, &have).unwrap().is_empty());
    let uncommented = example_uncommented(&have);
    let values = file_values(&cmd, &path, &uncommented).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(values.len(), uncommented.lines().count(), "{uncommented}");
    assert!(values.len() > 40, "{uncommented}");
    let file = TempFile::new("example.toml", &uncommented);
    let mut loaded = Config::load_from([
        "edgecomet".as_ref(),
        "--config".as_ref(),
        file.0.as_os_str(),
    ])
    .unwrap()
    .config;
    loaded.config = None;
    assert_eq!(format!("{loaded:?}"), format!("{:?}", Config::defaults()));
}

/// A redis-server of this test's own; killed on drop.
struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of a `POST /pub/config` with `body` and key `key`, on a new connection.
fn publish(addr: SocketAddr, key: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /pub/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[test]
fn processes_started_by_the_launcher_read_the_same_file() {
    let port = free_port();
    let redis = Redis(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test.sh installs it)"),
        port,
    );
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", redis.1)).is_err() {
        assert!(Instant::now() < until, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The secret and the limits only in the file: the children get them from it, not from argv.
    let key = "a-publish-key-from-the-file-only";
    let file = TempFile::new(
        "processes.toml",
        &format!(
            "processes = 2\nworkers = 1\nbroker = \"redis://127.0.0.1:{}\"\n\
             publish-key = [\"{key}\"]\nmax-body-bytes = \"16B\"\nws-ping-interval = 0\n",
            redis.1
        ),
    );
    let mut launcher = edgecomet()
        .arg("--config")
        .arg(&file.0)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog: a launcher (or a process of it) that hangs is killed after 60 s, so the test
    // fails with what it read instead of stalling the run (the processes die with the launcher:
    // PR_SET_PDEATHSIG).
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (finished, pid) = (finished.clone(), launcher.id() as i32);
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                if finished.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("the launcher did not finish within 60 s: killing it");
            // SAFETY: kill(2) on our own child, not yet waited for (`finished` is not set).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        });
    }
    let mut err = BufReader::new(launcher.stderr.take().unwrap());
    let mut log = Vec::new();
    let addr: SocketAddr = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            let _ = launcher.kill();
            panic!("the launcher ended: {log:?}");
        }
        if let Some(rest) = line.split("2 processes listening on ").nth(1) {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
        log.push(line);
    };
    // Keep reading what the processes write (a pipe nobody reads fills up, and a process
    // writing its log lines to it would block).
    let rest = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let rest = rest.clone();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                rest.lock().unwrap().push(line);
            }
        });
    }
    // Each process says that publishing needs a key: the key came from the file.
    let keyed = log
        .iter()
        .filter(|l| l.contains("publishing needs a publish key"))
        .count();
    let ok = std::panic::catch_unwind(|| {
        assert_eq!(keyed, 2, "{log:?}");
        // Connections spread over both processes: each refuses a body over the file's 16 B
        // and a publish without the key, and takes a small one with it.
        for _ in 0..8 {
            assert_eq!(publish(addr, key, "more than sixteen bytes"), 413);
            assert_eq!(publish(addr, "wrong-key-0123456789", "hi"), 401);
            assert_eq!(publish(addr, key, "hi"), 202);
        }
    });
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(launcher.id() as i32, libc::SIGTERM);
    }
    let status = launcher.wait();
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        status.as_ref().is_ok_and(|s| s.code().is_some()),
        "the launcher did not exit by itself after SIGTERM: {status:?}; it wrote: {:?}",
        rest.lock().unwrap()
    );
    if let Err(e) = ok {
        std::panic::resume_unwind(e);
    }
}
