//! Located diagnostics: `FILE:LINE:COL: field.path: what was expected, what was found`.

use std::fmt;

use super::node::Pos;

/// One problem in one file, at one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    /// Field path such as `spec.triggers[2].threshold.above`; empty for
    /// problems with the file as a whole (syntax, size, encoding).
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a file, in file order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A field path under construction: `spec`, `spec.steps[3]`, ...
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn root() -> Self {
        Path(String::new())
    }

    pub fn key(&self, key: &str) -> Path {
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Sink {
    file: String,
    diags: Vec<Diagnostic>,
}

impl Sink {
    pub fn new(file: &str) -> Self {
        Sink {
            file: file.to_owned(),
            diags: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, path: &Path, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            pos,
            path: path.as_str().to_owned(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.diags.is_empty()
    }

    /// The diagnostics sorted by position (stable for equal positions), or
    /// `None` when there were none.
    pub fn finish(mut self) -> Option<Diagnostics> {
        if self.diags.is_empty() {
            return None;
        }
        self.diags.sort_by_key(|d| d.pos);
        Some(Diagnostics(self.diags))
    }
}
