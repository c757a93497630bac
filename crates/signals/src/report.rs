//! What a worker tells its master over its status pipe, one line per message.
//!
//! Exit codes carry only a number; a report carries the reason, so the master can
//! print an app-load failure once, however many workers hit it.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The app is loaded and the worker is accepting connections.
    Ready,
    /// The worker served its `--max-requests`: start a replacement, then stop it.
    Recycle,
    /// The worker is about to exit with `code` because of `message` (one line).
    Failed { code: u8, message: String },
}

impl Report {
    /// The wire form: one line, newline-terminated.
    pub fn encode(&self) -> Vec<u8> {
        let mut line = self.to_string();
        line.push('\n');
        line.into_bytes()
    }

    /// Parse one line (without its newline).
    pub fn decode(line: &str) -> Option<Report> {
        match line {
            "ready" => return Some(Report::Ready),
            "recycle" => return Some(Report::Recycle),
            _ => {}
        }
        let rest = line.strip_prefix("failed ")?;
        let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(Report::Failed {
            code: code.parse().ok()?,
            message: message.to_string(),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Ready => f.write_str("ready"),
            Report::Recycle => f.write_str("recycle"),
            // Newlines would split the message into several reports.
            Report::Failed { code, message } => {
                write!(f, "failed {code} {}", message.replace(['\n', '\r'], " "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for r in [
            Report::Ready,
            Report::Recycle,
            Report::Failed {
                code: 4,
                message: "ModuleNotFoundError: No module named 'x'".into(),
            },
        ] {
            let wire = String::from_utf8(r.encode()).unwrap();
            assert_eq!(Report::decode(wire.trim_end_matches('\n')), Some(r));
        }
        let multi = Report::Failed {
            code: 3,
            message: "a\nb".into(),
        };
        assert_eq!(String::from_utf8(multi.encode()).unwrap(), "failed 3 a b\n");
        assert_eq!(Report::decode("bogus"), None);
    }
}
