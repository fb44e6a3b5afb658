//! Shared by the tests that run a second process: the test binary re-run as
//! a peer (selected by an environment variable), driven line by line over
//! its stdin and stdout.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Marks the lines a peer says, so the test harness's own text is skipped.
pub const TAG: &str = "peer> ";

/// A peer process.
pub struct Peer {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// Re-runs this binary's test `test` alone, with `env` set to `root`.
    pub fn start(test: &str, env: &str, root: &Path) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(env, root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Peer {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one line.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line the peer says (without its tag).
    pub fn next(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the peer exited"
            );
            // The harness may have printed the start of a line of its own.
            if let Some((_, said)) = line.trim_end().split_once(TAG) {
                return said.to_string();
            }
        }
    }

    /// Sends `exit`, closes its input and waits for a clean exit.
    pub fn exit(mut self) {
        self.send("exit");
        drop(self.stdin);
        assert!(self.child.wait().unwrap().success());
    }
}

/// Says one line, as a peer, to the test driving it.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TAG}{line}").unwrap();
    out.flush().unwrap();
}
