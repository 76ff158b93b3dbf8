//! Live progress on stderr (rate, total, ETA), only when stderr is a
//! terminal and `--no-progress` was not given; scripts see nothing.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar is redrawn.
const REFRESH_INTERVAL_MS: u64 = 200;

/// A counter the workers add to, and the bar that shows it.
pub struct Progress {
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `what` (e.g. "acked") against `total` messages when
    /// known; `enabled` is false for `--no-progress`.
    pub fn start(what: &str, total: Option<u64>, enabled: bool) -> Progress {
        let counter = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = new_bar(what, total);
            let counter = Arc::clone(&counter);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    bar.set_position(counter.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(REFRESH_INTERVAL_MS));
                }
                bar.set_position(counter.load(Ordering::Relaxed));
                bar.finish_and_clear();
            })
        });
        Progress {
            counter,
            stop,
            ticker,
        }
    }

    /// The counter to add finished messages to.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.counter)
    }

    /// Removes the bar.
    pub fn finish(mut self) {
        self.stop_ticker();
    }

    fn stop_ticker(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

fn new_bar(what: &str, total: Option<u64>) -> ProgressBar {
    let template = match total {
        Some(_) => {
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} {msg} {per_sec} ETA {eta}"
        }
        None => "{elapsed_precise} {spinner} {human_pos} {msg} {per_sec}",
    };
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
