//! Standard output that survives a closed pipe: `krafter check-config |
//! head -1` must end quietly, not panic like `println!` does on EPIPE.

use std::io::Write;

/// Writes `text` to stdout and flushes. When the reader has gone away
/// (EPIPE) the process exits quietly with status 0, as `grep` or `rg` do:
/// the reader asked for no more. Any other write error exits 1 with one line.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`out`].
macro_rules! outln {
    () => { $crate::cli::output::out("\n") };
    ($($arg:tt)*) => { $crate::cli::output::out(&format!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use outln;

/// One line for an error: the message and each cause whose text the line
/// does not already contain ("cannot listen on …: Address already in use"
/// names its cause once, not twice), newlines flattened.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:1: {0}")]
    struct Listen(#[source] std::io::Error);

    #[test]
    fn causes_are_named_once() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let text = io.to_string();
        let e = anyhow::Error::new(Listen(io)).context("starting the server");
        let line = error_line(&e);
        assert_eq!(line.matches(&text).count(), 1, "{line}");
        assert!(
            line.starts_with("starting the server: cannot listen"),
            "{line}"
        );
    }

    #[test]
    fn distinct_causes_are_kept_and_lines_flattened() {
        let e = anyhow::anyhow!("inner\nproblem").context("outer");
        assert_eq!(error_line(&e), "outer: inner problem");
    }
}
