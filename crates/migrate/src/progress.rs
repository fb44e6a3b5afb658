//! Progress: indicatif bars (one per table or bucket, rows or bytes, rate,
//! ETA) on a terminal; plain lines every few seconds otherwise.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, lines otherwise.
    #[default]
    Auto,
    /// indicatif bars on stderr.
    Bars,
    /// A plain line per task on stderr every `LINE_EVERY`.
    Lines,
    /// Nothing.
    Off,
}

/// How often plain progress lines are printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// One task's counter (a table's rows or a bucket's bytes).
#[derive(Debug)]
pub struct Task {
    name: String,
    unit: &'static str,
    total: AtomicU64,
    done: AtomicU64,
    finished: AtomicBool,
    bar: Option<ProgressBar>,
}

impl Task {
    /// Adds `n` units done.
    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Sets the units done (a resumed task starts where it was).
    pub fn set(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
    }

    /// Marks the task finished.
    pub fn finish(&self, message: &str) {
        self.finished.store(true, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.finish_with_message(message.to_string());
        }
    }
}

/// The progress display of one run.
#[derive(Debug)]
pub struct Progress {
    multi: Option<MultiProgress>,
    lines: bool,
    tasks: Mutex<Vec<Arc<Task>>>,
    started: Instant,
    stop: Arc<AtomicBool>,
}

impl Progress {
    /// A display in `mode`; in line mode a background task prints the lines.
    pub fn new(mode: ProgressMode) -> Arc<Self> {
        let (bars, lines) = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => (true, false),
            ProgressMode::Auto | ProgressMode::Lines => (false, true),
            ProgressMode::Bars => (true, false),
            ProgressMode::Off => (false, false),
        };
        let p = Arc::new(Progress {
            multi: bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            lines,
            tasks: Mutex::new(Vec::new()),
            started: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
        });
        if lines {
            let weak = Arc::downgrade(&p);
            let stop = Arc::clone(&p.stop);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LINE_EVERY).await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match weak.upgrade() {
                        Some(p) => p.print_lines(),
                        None => break,
                    }
                }
            });
        }
        p
    }

    /// A new task counting `unit` ("rows", "bytes").
    pub fn task(&self, name: &str, unit: &'static str, total: u64) -> Arc<Task> {
        let bar = self.multi.as_ref().map(|m| {
            let style = if unit == "bytes" {
                "{prefix:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}"
            } else {
                "{prefix:>24} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta} {msg}"
            };
            let b = m.add(ProgressBar::new(total));
            b.set_style(
                ProgressStyle::with_template(style)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(name.to_string());
            b
        });
        let t = Arc::new(Task {
            name: name.to_string(),
            unit,
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            bar,
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(Arc::clone(&t));
        }
        t
    }

    /// Prints a message above the bars (or as a line).
    pub fn message(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None if self.lines => eprintln!("{text}"),
            None => {}
        }
    }

    fn print_lines(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let Ok(tasks) = self.tasks.lock() else {
            return;
        };
        for t in tasks.iter().filter(|t| !t.finished.load(Ordering::Relaxed)) {
            let done = t.done.load(Ordering::Relaxed);
            let total = t.total.load(Ordering::Relaxed);
            let pct = if total > 0 {
                format!(" ({:.0}%)", done as f64 * 100.0 / total as f64)
            } else {
                String::new()
            };
            eprintln!(
                "migrate: {}: {done}/{total} {}{pct}, {:.0} {}/s overall",
                t.name,
                t.unit,
                done as f64 / secs,
                t.unit
            );
        }
    }

    /// Stops the line printer and clears the bars.
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
