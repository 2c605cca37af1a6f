//! Progress of a long copy or check, on stderr: a bar redrawn in place on a
//! terminal; in a pipe or the journal, a plain line every
//! [`PLAIN_EVERY`] (a bar's carriage returns would be noise there).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a plain line is printed when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// How often the bar is redrawn on a terminal.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
const WIDTH: usize = 30;

pub struct Progress {
    what: &'static str,
    total_files: u64,
    /// `None`: the bar follows the files (a backup, which reads only the
    /// files `objects/` lacks, cannot know its bytes ahead).
    total_bytes: Option<u64>,
    files: u64,
    bytes: u64,
    tty: bool,
    last: Option<Instant>,
    drawn: bool,
}

pub fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

impl Progress {
    pub fn new(what: &'static str, total_files: u64, total_bytes: Option<u64>) -> Progress {
        Progress {
            what,
            total_files,
            total_bytes,
            files: 0,
            bytes: 0,
            tty: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    pub fn bytes(&mut self, n: u64) {
        self.bytes += n;
        self.maybe_draw();
    }

    pub fn file_done(&mut self) {
        self.files += 1;
        self.maybe_draw();
    }

    fn maybe_draw(&mut self) {
        let every = if self.tty { REDRAW_EVERY } else { PLAIN_EVERY };
        let now = Instant::now();
        match self.last {
            // The first plain line waits a period: short runs print none.
            None if !self.tty => {
                self.last = Some(now);
                return;
            }
            Some(t) if now.duration_since(t) < every => return,
            _ => {}
        }
        self.last = Some(now);
        self.draw();
    }

    fn line(&self) -> String {
        match self.total_bytes {
            Some(total) => format!(
                "{}: {}/{} files, {} of {}",
                self.what,
                self.files,
                self.total_files,
                human(self.bytes),
                human(total)
            ),
            None => format!(
                "{}: {}/{} files, {} read",
                self.what,
                self.files,
                self.total_files,
                human(self.bytes)
            ),
        }
    }

    fn draw(&mut self) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let frac = if let Some(total) = self.total_bytes.filter(|t| *t > 0) {
                self.bytes as f64 / total as f64
            } else if self.total_files > 0 {
                self.files as f64 / self.total_files as f64
            } else {
                1.0
            };
            let full = ((frac.clamp(0.0, 1.0)) * WIDTH as f64) as usize;
            let _ = write!(
                err,
                "\r\x1b[2K[{}{}] {}",
                "#".repeat(full),
                "-".repeat(WIDTH - full),
                self.line()
            );
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{}", self.line());
        }
        let _ = err.flush();
    }

    /// The last state of the bar, then a new line (on a terminal), so what
    /// follows starts on a clean line. Dropping does the same.
    pub fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.tty && self.drawn {
            self.draw();
            let _ = writeln!(std::io::stderr());
        }
    }
}
