//! Processes: the example binaries (built on demand, their web servers on free ports), children
//! killed when a test ends, signals, bounded waits for an exit, the lines a child prints, and
//! the table recoveries a worker logged.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

/// Path of an up-to-date example binary (`cargo test --test x` does not rebuild examples).
pub(crate) fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join("examples").join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == name) {
        built.push(name.to_owned());
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build");
        assert!(status.success(), "building example {name}");
    }
    path
}

/// A command running an example, its web server on a free port (tests run several at once;
/// the default port is 6066).
pub(crate) fn command(name: &str) -> Command {
    let mut cmd = Command::new(example(name));
    cmd.env("RILL_WEB_PORT", "0");
    cmd
}

/// Runs an example to its end (one of its CLI commands), logging warnings only.
pub(crate) fn run_example(name: &str, args: &[&str]) -> Output {
    command(name)
        .args(args)
        .env("RILL_LOG", "warn")
        .output()
        .expect("run example")
}

/// The entries of a table as an example's `tables <table> --json` prints them from the local
/// copy under `data_dir`: one JSON value (`{"key": .., "value": ..}`) a line.
pub(crate) fn table_json(name: &str, data_dir: &str, table: &str) -> Vec<serde_json::Value> {
    let out = run_example(name, &["--data-dir", data_dir, "tables", table, "--json"]);
    assert!(
        out.status.success(),
        "{name} tables {table}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// [`table_json`] as a map from key to value.
pub(crate) fn table_of<K, V>(name: &str, data_dir: &str, table: &str) -> BTreeMap<K, V>
where
    K: DeserializeOwned + Ord,
    V: DeserializeOwned,
{
    table_json(name, data_dir, table)
        .into_iter()
        .map(|mut e| {
            let key = serde_json::from_value(e["key"].take()).expect("a key");
            (
                key,
                serde_json::from_value(e["value"].take()).expect("a value"),
            )
        })
        .collect()
}

/// Runs an example binary with piped stdout (read it with [`lines`], or it fills up and blocks
/// the child) and stderr passed through.
pub(crate) fn spawn_example(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    spawn(name, args, envs, Stdio::piped())
}

/// Runs an example binary discarding its stdout.
pub(crate) fn spawn_example_quiet(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    spawn(name, args, envs, Stdio::null())
}

/// Runs an example binary with stdout piped and stderr written to `log`.
pub(crate) fn spawn_example_logged(
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    log: &Path,
) -> Proc {
    let mut cmd = command(name);
    let file = std::fs::File::create(log).expect("log file");
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(file)
        .env("RILL_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("spawn example"))
}

fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)], stdout: Stdio) -> Proc {
    let mut cmd = command(name);
    cmd.args(args)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .env("RILL_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("spawn example"))
}

/// A child process that is killed when the test ends, passing or not.
pub(crate) struct Proc(pub(crate) Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends a signal to a child process.
pub(crate) fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for a child to exit, killing it after `timeout`.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    exited_within(child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("process {} did not exit within {timeout:?}", child.id());
    })
}

/// Waits up to `timeout` for a child to exit: its status, or `None` while it still runs.
pub(crate) fn exited_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a child with SIGTERM, as a user's Ctrl-C or a supervisor would, and waits for it
/// (killing it after `timeout`).
pub(crate) fn terminate(child: &mut Child, timeout: Duration) -> ExitStatus {
    signal(child, "TERM");
    wait_exit(child, timeout)
}

/// Lines a child printed, collected on a thread as they come.
pub(crate) type Lines = Arc<Mutex<Vec<String>>>;

/// Collects a child's stdout lines on a thread.
pub(crate) fn lines(child: &mut Child) -> Lines {
    collect_lines(child.stdout.take().expect("piped stdout"), None)
}

/// Collects a child's stderr lines on a thread (its log), echoing each to the test's stderr
/// prefixed with `[echo_as]`.
pub(crate) fn stderr_lines(child: &mut Child, echo_as: &str) -> Lines {
    let echo = format!("[{echo_as}]");
    collect_lines(child.stderr.take().expect("piped stderr"), Some(echo))
}

fn collect_lines(from: impl Read + Send + 'static, echo: Option<String>) -> Lines {
    let out = Lines::default();
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if let Some(prefix) = &echo {
                eprintln!("{prefix} {line}");
            }
            sink.lock().expect("lines").push(line);
        }
    });
    out
}

/// Waits until `check` holds for the collected lines.
pub(crate) fn wait_lines(
    lines: &Mutex<Vec<String>>,
    timeout: Duration,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = lines.lock().expect("lines").clone();
        if check(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; output so far: {now:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last 30 lines of a log file (nothing when it cannot be read), for failure messages.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits until the log file holds `text`; fails the test naming `what`, with the log's last
/// lines, after `timeout`.
pub(crate) fn wait_log(what: &str, log: &Path, text: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; the log ends with:\n{}",
            log_tail(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A program (not an example) running with its stdout and stderr read on threads of their
/// own, so that a full pipe never stalls it.
pub(crate) struct Running {
    what: String,
    child: Child,
    stdin: JoinHandle<std::io::Result<()>>,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Running {
    /// Starts `cmd`, feeding it `stdin`.
    pub(crate) fn spawn(cmd: &mut Command, stdin: &[u8]) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut input = child.stdin.take().expect("stdin");
        let stdin = stdin.to_vec();
        let read_all = |mut from: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = from.read_to_end(&mut v);
                v
            })
        };
        Running {
            what: format!("{cmd:?}"),
            stdin: std::thread::spawn(move || input.write_all(&stdin)),
            stdout: read_all(Box::new(child.stdout.take().expect("stdout"))),
            stderr: read_all(Box::new(child.stderr.take().expect("stderr"))),
            child,
        }
    }

    /// Waits for the program to end (killing it after `limit`) and returns what it printed.
    pub(crate) fn finish(mut self, limit: Duration) -> Output {
        let Some(status) = exited_within(&mut self.child, limit) else {
            let _ = self.child.kill();
            panic!("{} did not finish within {limit:?}", self.what);
        };
        let _ = self.stdin.join();
        Output {
            status,
            stdout: self.stdout.join().expect("stdout reader"),
            stderr: self.stderr.join().expect("stderr reader"),
        }
    }
}

/// Runs a program to its end (killed after `limit`), feeding it `stdin`.
pub(crate) fn run_to_end(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    Running::spawn(cmd, stdin).finish(limit)
}

/// Changelog records a worker's table recoveries replayed, summed from its log (the
/// `records=` of "recovering table partition from its changelog").
pub(crate) fn replayed(log: &Path) -> i64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("recovering table partition from its changelog"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("records="))
                .and_then(|n| n.parse::<i64>().ok())
        })
        .sum()
}

/// The (old, new) offsets a `reset` command printed for `group`, a row per partition (`-`, no
/// committed offset, reads as 0); fails the test if the command failed.
pub(crate) fn reset_moves(out: &Output, group: &str) -> Vec<(i64, i64)> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(group))
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let new = cols
                .get(4)
                .and_then(|n| n.parse().ok())
                .expect("new offset");
            (cols.get(3).and_then(|o| o.parse().ok()).unwrap_or(0), new)
        })
        .collect()
}
