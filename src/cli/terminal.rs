//! How the command line fits its output to a terminal: the width it has
//! (`COLUMNS`, else the terminal's, else 80), tables whose widest columns
//! give way with an ellipsis, text wrapped at word boundaries, and instants
//! as RFC 3339 with how long ago. It prints nothing itself; the renderers
//! take `now` (from [`now`], the daemon's clock), so the same input renders
//! the same.

use std::io::IsTerminal;

use crate::time::Timestamp;

/// The width when neither `COLUMNS` nor a terminal says otherwise.
pub const DEFAULT_WIDTH: usize = 80;

/// The narrowest width a table is laid out for: below it, lines wrap.
const NARROWEST: usize = 40;

/// The width to fit output to: `COLUMNS` when set to a number, else the
/// terminal's (stdout), else [`DEFAULT_WIDTH`].
pub fn width() -> usize {
    if let Some(cols) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return cols.max(NARROWEST);
    }
    let stdout = std::io::stdout();
    if stdout.is_terminal()
        && let Ok(size) = rustix::termios::tcgetwinsize(&stdout)
        && size.ws_col > 0
    {
        return usize::from(size.ws_col).max(NARROWEST);
    }
    DEFAULT_WIDTH
}

/// `s` cut to at most `max` characters from the left, the first one `…`
/// when cut: the end of a version (its tag) is what tells two apart.
pub fn ellipsize_left(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::from('…');
    out.extend(s.chars().skip(n - (max - 1)));
    out
}

/// `s` cut to at most `max` characters, the last one `…` when cut.
pub fn ellipsize(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// `text` wrapped at spaces into lines of at most `width` characters, each
/// starting with `indent`; a word longer than a line is cut with `…`.
pub fn wrap(text: &str, width: usize, indent: &str) -> String {
    let room = width.saturating_sub(indent.chars().count()).max(10);
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let word = ellipsize(word, room);
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > room {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A table of text cells laid out to a width: each column as wide as its
/// widest cell, and, when the whole is too wide, the columns marked
/// shrinkable give way (the widest first) down to a few characters, their
/// cells (and headers) cut with `…`.
pub struct Table {
    headers: Vec<&'static str>,
    shrinkable: Vec<bool>,
    /// Right-aligned columns (numbers with their units).
    right: Vec<bool>,
    /// Columns cut from the left (versions: their end tells them apart).
    cut_left: Vec<bool>,
    rows: Vec<Vec<String>>,
}

/// The narrowest a shrinkable column gets (its header cut too).
const MIN_SHRUNK: usize = 4;

/// Two spaces between columns.
const GAP: usize = 2;

impl Table {
    /// Columns: header, whether it may shrink, whether it is right-aligned.
    pub fn new(columns: &[(&'static str, bool, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            shrinkable: columns.iter().map(|c| c.1).collect(),
            right: columns.iter().map(|c| c.2).collect(),
            cut_left: vec![false; columns.len()],
            rows: Vec::new(),
        }
    }

    /// Cut column `i`'s cells from the left.
    pub fn cut_left(mut self, i: usize) -> Table {
        if let Some(c) = self.cut_left.get_mut(i) {
            *c = true;
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table's lines, each at most `width` characters when the fixed
    /// columns allow it.
    pub fn render(&self, width: usize) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .chain([self.headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * n.saturating_sub(1);
        // Bounded: each pass narrows one column by one, down to its header.
        while total(&widths) > width {
            let widest = (0..n)
                .filter(|&i| self.shrinkable[i] && widths[i] > MIN_SHRUNK)
                .max_by_key(|&i| widths[i]);
            match widest {
                Some(i) => widths[i] -= 1,
                None => break,
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for cells in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let text = cells.get(i).map_or("", String::as_str);
                let cell = if self.cut_left[i] {
                    ellipsize_left(text, *w)
                } else {
                    ellipsize(text, *w)
                };
                let pad = w - cell.chars().count();
                let last = i + 1 == n;
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(&cell);
                } else {
                    line.push_str(&cell);
                    if !last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
                if !last {
                    line.push_str(&" ".repeat(GAP));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// An RFC 3339 instant with how long ago (or ahead) it is:
/// `2026-12-04T21:42:31.541Z (3m ago)`. Text that is not an instant is
/// shown as it is.
pub fn when(at: &str, now: Timestamp) -> String {
    match parse_rfc3339(at) {
        Some(t) => format!("{at} ({})", relative(t, now)),
        None => at.to_string(),
    }
}

/// `3m ago`, `2h5m ago`, `in 40s`, `just now`.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let (ms, ahead) = if now >= t {
        (now.as_millis() - t.as_millis(), false)
    } else {
        (t.as_millis() - now.as_millis(), true)
    };
    let s = ms / 1000;
    if s == 0 {
        return "just now".into();
    }
    let span = if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h}h"),
            (h, m) => format!("{h}h{m}m"),
        }
    } else {
        match (s / 86_400, s % 86_400 / 3600) {
            (d, 0) => format!("{d}d"),
            (d, h) => format!("{d}d{h}h"),
        }
    };
    if ahead {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// An RFC 3339 instant as a [`Timestamp`]; `None` before the epoch or
/// when it does not read.
pub fn parse_rfc3339(at: &str) -> Option<Timestamp> {
    let t: jiff::Timestamp = at.parse().ok()?;
    u64::try_from(t.as_millisecond())
        .ok()
        .map(Timestamp::from_millis)
}

/// The system clock (the daemon's one reader of it), for the commands
/// that show how long ago.
pub fn now() -> Timestamp {
    use crate::daemon::clock::Clock;
    crate::daemon::clock::SystemClock.now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_give_way_with_an_ellipsis_and_lines_fit() {
        let mut t = Table::new(&[
            ("ID", false, false),
            ("VERSIONS", true, false),
            ("W", false, true),
        ]);
        t.row(vec![
            "r-1".into(),
            "registry.example.com/team/api:1.2.3-rc.1+build.20261204 → registry.example.com/team/api:1.2.4".into(),
            "50%".into(),
        ]);
        let out = t.render(40);
        for line in out.lines() {
            assert!(line.chars().count() <= 40, "{line:?}");
        }
        assert!(out.contains('…'), "{out}");
        assert!(out.lines().nth(1).unwrap().ends_with("50%"), "{out}");
    }

    #[test]
    fn text_wraps_at_words() {
        let out = wrap(
            "gathering: 37% of the way to rollback; canary 3 of 100",
            24,
            "  ",
        );
        assert_eq!(
            out,
            "  gathering: 37% of the\n  way to rollback;\n  canary 3 of 100\n"
        );
    }

    #[test]
    fn instants_read_relative_to_now() {
        let at = "2026-12-04T21:42:31.541Z";
        let t = parse_rfc3339(at).unwrap();
        let later = |s: u64| Timestamp::from_millis(t.as_millis() + s * 1000);
        assert_eq!(when(at, later(185)), format!("{at} (3m ago)"));
        assert_eq!(relative(t, later(0)), "just now");
        assert_eq!(relative(t, later(7500)), "2h5m ago");
        assert_eq!(relative(later(40), t), "in 40s");
        assert_eq!(when("soon", t), "soon");
    }
}
