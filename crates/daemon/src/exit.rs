//! Exit codes (sysexits.h) and the error type that carries one to `main`.

use std::fmt;

pub const OK: u8 = 0;
pub const USAGE: u8 = 64;
pub const DATAERR: u8 = 65;
pub const NOINPUT: u8 = 66;
pub const UNAVAILABLE: u8 = 69;
pub const SOFTWARE: u8 = 70;
pub const CANTCREAT: u8 = 73;
pub const TEMPFAIL: u8 = 75;
pub const CONFIG: u8 = 78;

/// A command's failure: what to print and which code to exit with.
pub struct Fatal {
    pub code: u8,
    pub error: anyhow::Error,
}

impl fmt::Debug for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#} (exit {})", self.error, self.code)
    }
}

impl From<anyhow::Error> for Fatal {
    fn from(error: anyhow::Error) -> Self {
        Fatal {
            code: SOFTWARE,
            error,
        }
    }
}

/// Attach an exit code to an error on its way up.
pub trait ExitCode<T> {
    fn exit_with(self, code: u8) -> Result<T, Fatal>;
}

impl<T, E: Into<anyhow::Error>> ExitCode<T> for Result<T, E> {
    fn exit_with(self, code: u8) -> Result<T, Fatal> {
        self.map_err(|e| Fatal {
            code,
            error: e.into(),
        })
    }
}

pub fn fatal(code: u8, msg: impl fmt::Display) -> Fatal {
    Fatal {
        code,
        error: anyhow::anyhow!("{msg}"),
    }
}
