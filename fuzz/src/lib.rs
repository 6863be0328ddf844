//! What every fuzz target asserts about an error: that it is located inside
//! the input it came from. A parser may refuse anything; it must say where.

use canaryd::policy::Diagnostics;

/// The input's extent: its lines (1-based, the last one may be empty) and
/// the longest line in bytes. A line ends at LF, CRLF or a lone CR: YAML
/// counts all three as line breaks.
pub struct Extent {
    pub lines: usize,
    pub widest: usize,
}

impl Extent {
    pub fn of(bytes: &[u8]) -> Extent {
        let mut lines = 1;
        let mut widest = 0;
        let mut width = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let crlf = b == b'\r' && bytes.get(i + 1) == Some(&b'\n');
            if b == b'\n' || (b == b'\r' && !crlf) {
                lines += 1;
                widest = widest.max(width);
                width = 0;
            } else if !crlf {
                width += 1;
            }
        }
        Extent {
            lines,
            widest: widest.max(width),
        }
    }

    /// A 1-based line and column inside the input (a column may point one
    /// past the end of its line, where something was expected).
    pub fn assert_inside(&self, line: u64, col: u64, what: &dyn std::fmt::Display) {
        assert!(
            line >= 1 && line as usize <= self.lines,
            "line {line} outside 1..={}: {what}",
            self.lines
        );
        assert!(
            col >= 1 && col as usize <= self.widest + 1,
            "column {col} outside 1..={}: {what}",
            self.widest + 1
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
