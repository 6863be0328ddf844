//! What every fuzz target asserts about an error: that it is located inside
//! the input it came from. A parser may refuse anything; it must say where.

use canaryd::policy::Diagnostics;

/// The input's extent under both conventions its readers use: lines ended
/// by LF only (the exposition formats; the YAML loader's byte checks), and
/// by LF, CRLF or a lone CR (YAML's own line breaks). A location must be
/// inside the input under one of them.
pub struct Extent {
    lf_only: Lines,
    any_break: Lines,
}

/// 1-based lines (the last one may be empty) and the widest, in bytes.
struct Lines {
    count: usize,
    widest: usize,
}

impl Lines {
    fn of(bytes: &[u8], cr_breaks: bool) -> Lines {
        let mut count = 1;
        let mut widest = 0;
        let mut width = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let crlf = b == b'\r' && bytes.get(i + 1) == Some(&b'\n');
            if b == b'\n' || (cr_breaks && b == b'\r' && !crlf) {
                count += 1;
                widest = widest.max(width);
                width = 0;
            } else if !(cr_breaks && crlf) {
                width += 1;
            }
        }
        Lines {
            count,
            widest: widest.max(width),
        }
    }

    /// A column may point one past the end of its line, where something
    /// was expected.
    fn contains(&self, line: u64, col: u64) -> bool {
        line >= 1 && line as usize <= self.count && col >= 1 && col as usize <= self.widest + 1
    }
}

impl Extent {
    pub fn of(bytes: &[u8]) -> Extent {
        Extent {
            lf_only: Lines::of(bytes, false),
            any_break: Lines::of(bytes, true),
        }
    }

    /// A 1-based line and column inside the input.
    pub fn assert_inside(&self, line: u64, col: u64, what: &dyn std::fmt::Display) {
        assert!(
            self.lf_only.contains(line, col) || self.any_break.contains(line, col),
            "{line}:{col} is outside the input ({} lines of at most {} bytes; {} counting CR as a break, at most {} bytes): {what}",
            self.lf_only.count,
            self.lf_only.widest,
            self.any_break.count,
            self.any_break.widest
        );
    }
}

/// A refusal from one of the YAML front ends: at least one diagnostic, each
/// naming the file, located inside it, with a message.
pub fn assert_located(file: &str, bytes: &[u8], diagnostics: &Diagnostics) {
    assert!(!diagnostics.0.is_empty(), "an error without diagnostics");
    let extent = Extent::of(bytes);
    for d in &diagnostics.0 {
        assert_eq!(d.file, file, "{d}");
        assert!(!d.message.trim().is_empty(), "an empty message: {d}");
        extent.assert_inside(d.pos.line, d.pos.col, d);
    }
}
