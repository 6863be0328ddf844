//! The line grammar of both formats and the grouping of samples into families.
//! One pass over the input; a line is a byte cursor, and the only allocations
//! are the owned strings of the result (a label value with no escapes is
//! copied once).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};

use super::number::parse_number;
use super::semantics::{At, Broken, FamilyState, Incoming, KeyIsHash, Special, check_sample};
use super::{Exemplar, Family, Format, Kind, Limits, ParseError, ParseErrorKind as E, Sample};

/// Parses a whole exposition. Any malformed line fails it as a whole.
pub fn parse(input: &str, format: Format, limits: &Limits) -> Result<Vec<Family>, ParseError> {
    if input.len() > limits.max_input_bytes {
        return Err(ParseError {
            line: 1,
            column: 1,
            kind: E::InputTooLarge {
                size: input.len(),
                limit: limits.max_input_bytes,
            },
        });
    }
    Parser::new(format, limits).run(input)
}

/// [`parse`] for a response body that may not be UTF-8; an invalid byte is
/// reported where it is.
pub fn parse_bytes(
    input: &[u8],
    format: Format,
    limits: &Limits,
) -> Result<Vec<Family>, ParseError> {
    if input.len() > limits.max_input_bytes {
        return Err(ParseError {
            line: 1,
            column: 1,
            kind: E::InputTooLarge {
                size: input.len(),
                limit: limits.max_input_bytes,
            },
        });
    }
    match std::str::from_utf8(input) {
        Ok(text) => parse(text, format, limits),
        Err(e) => {
            let valid = &input[..e.valid_up_to()];
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            // `valid` is UTF-8 by construction of `valid_up_to`.
            let column =
                std::str::from_utf8(&valid[line_start..]).map_or(1, |s| s.chars().count() + 1);
            Err(ParseError {
                line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
                column,
                kind: E::NotUtf8,
            })
        }
    }
}

/// Where the family being read stands.
struct Current {
    index: usize,
    has_type: bool,
    has_help: bool,
    has_unit: bool,
    has_samples: bool,
}

struct Parser<'a, 'l> {
    format: Format,
    limits: &'l Limits,
    families: Vec<Family>,
    /// The last line of each family, for the "not contiguous" message.
    ended_at: Vec<usize>,
    family_by_name: HashMap<&'a str, usize>,
    /// Sample names already seen, and whose they are.
    family_by_sample: HashMap<&'a str, usize>,
    current: Option<Current>,
    last_sample_name: &'a str,
    /// Byte offset of each label value on the current line (for located
    /// `le`/`quantile` errors); reused across lines.
    value_offsets: Vec<usize>,
    /// Every series seen so far (a hash of its name and label set, label
    /// order ignored) and where its latest sample is: (family, sample). A
    /// hit is confirmed against that sample.
    series_last: HashMap<u64, (usize, usize), KeyIsHash>,
    /// Keys unknown to whoever writes the exposition, so that colliding
    /// series or metrics cannot be crafted.
    series_hasher: RandomState,
    /// The type rules' state for the current family.
    family_state: FamilyState,
    /// OpenMetrics: the suffixed sample names each typed family owns
    /// (`a_total`, `a_created` of counter `a`), so that another family
    /// cannot take one.
    claimed: HashMap<String, usize>,
}

impl<'a, 'l> Parser<'a, 'l> {
    fn new(format: Format, limits: &'l Limits) -> Self {
        Parser {
            format,
            limits,
            families: Vec::new(),
            ended_at: Vec::new(),
            family_by_name: HashMap::new(),
            family_by_sample: HashMap::new(),
            current: None,
            last_sample_name: "",
            value_offsets: Vec::new(),
            series_last: HashMap::default(),
            series_hasher: RandomState::new(),
            family_state: FamilyState::default(),
            claimed: HashMap::new(),
        }
    }

    fn om(&self) -> bool {
        self.format == Format::OpenMetrics
    }

    fn run(mut self, input: &'a str) -> Result<Vec<Family>, ParseError> {
        let mut rest = input;
        let mut line_no = 0;
        let mut seen_eof = false;
        while !rest.is_empty() {
            line_no += 1;
            let (text, terminated) = match rest.find('\n') {
                Some(i) => {
                    let text = &rest[..i];
                    rest = &rest[i + 1..];
                    (text, true)
                }
                None => {
                    let text = rest;
                    rest = "";
                    (text, false)
                }
            };
            let mut line = Line {
                text,
                no: line_no,
                pos: 0,
            };
            if seen_eof {
                return Err(line.err(E::TextAfterEof));
            }
            if text.len() > self.limits.max_line_bytes {
                return Err(line.err(E::LineTooLong {
                    size: text.len(),
                    limit: self.limits.max_line_bytes,
                }));
            }
            seen_eof = self.line(&mut line)?;
            if !terminated && !seen_eof {
                line.pos = text.len();
                return Err(line.err(E::NoFinalNewline));
            }
        }
        if self.om() && !seen_eof {
            return Err(ParseError {
                line: line_no + 1,
                column: 1,
                kind: E::MissingEof,
            });
        }
        self.finish_family()?;
        Ok(self.families)
    }

    /// Returns whether the line was OpenMetrics' `# EOF`.
    fn line(&mut self, line: &mut Line<'a>) -> Result<bool, ParseError> {
        if self.om() {
            match line.peek() {
                None => Err(line.err(E::BlankLine)),
                Some(b'#') => self.om_descriptor(line),
                Some(_) => self.sample(line).map(|()| false),
            }
        } else {
            line.skip_blanks();
            match line.peek() {
                None => Ok(false),
                Some(b'#') => self.text_comment(line).map(|()| false),
                Some(_) => self.sample(line).map(|()| false),
            }
        }
    }

    /// Text format: `# HELP name docstring`, `# TYPE name type`, or a comment.
    fn text_comment(&mut self, line: &mut Line<'a>) -> Result<(), ParseError> {
        line.pos += 1;
        line.skip_blanks();
        let keyword = line.token();
        match keyword {
            "HELP" | "TYPE" => {}
            _ => return Ok(()),
        }
        line.expect_blanks("a blank and a metric name")?;
        let name_at = line.pos;
        let name = line.metric_name()?;
        line.end_of_token("a blank")?;
        if keyword == "HELP" {
            line.skip_blanks();
            let doc = line.text[line.pos..].trim_end_matches([' ', '\t']);
            let help = unescape(line, doc, &TEXT_HELP_ESCAPES)?;
            self.metadata(line, name_at, name, Meta::Help(help))
        } else {
            line.expect_blanks("a blank and a metric type")?;
            let kind_at = line.pos;
            let kind = match line.token() {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                "summary" => Kind::Summary,
                "untyped" => Kind::Untyped,
                other => {
                    line.pos = kind_at;
                    return Err(line.err(E::UnknownType(other.to_owned())));
                }
            };
            line.skip_blanks();
            line.expect_end()?;
            self.metadata(line, name_at, name, Meta::Type(kind))
        }
    }

    /// OpenMetrics: `# TYPE|HELP|UNIT name ...` or `# EOF`; no other comments.
    fn om_descriptor(&mut self, line: &mut Line<'a>) -> Result<bool, ParseError> {
        if !line.text.starts_with("# ") {
            return Err(line.expected("`# ` followed by TYPE, HELP, UNIT or EOF"));
        }
        line.pos = 2;
        let keyword_at = line.pos;
        let keyword = line.token();
        if keyword == "EOF" {
            line.expect_end()?;
            return Ok(true);
        }
        if !matches!(keyword, "TYPE" | "HELP" | "UNIT") {
            line.pos = keyword_at;
            return Err(
                line.expected("TYPE, HELP, UNIT or EOF (OpenMetrics has no other comments)")
            );
        }
        line.expect_byte(b' ', "a space and a metric name")?;
        let name_at = line.pos;
        let name = line.metric_name()?;
        let meta = match keyword {
            "HELP" => {
                // Even an empty help has its separating space.
                line.expect_byte(b' ', "a space and the help text")?;
                let raw = &line.text[line.pos..];
                Meta::Help(unescape(line, raw, &OM_ESCAPES)?)
            }
            "TYPE" => {
                line.expect_byte(b' ', "a space and a metric type")?;
                let kind_at = line.pos;
                let kind = match &line.text[line.pos..] {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" => Kind::Histogram,
                    "gaugehistogram" => Kind::GaugeHistogram,
                    "stateset" => Kind::StateSet,
                    "info" => Kind::Info,
                    "summary" => Kind::Summary,
                    "unknown" => Kind::Untyped,
                    other => {
                        line.pos = kind_at;
                        return Err(line.err(E::UnknownType(other.to_owned())));
                    }
                };
                Meta::Type(kind)
            }
            _ => {
                // Even an empty unit has its separating space.
                line.expect_byte(b' ', "a space and a unit")?;
                let unit_at = line.pos;
                let unit = line.take_while(is_metric_name_byte);
                line.expect_end()?;
                if !unit.is_empty() && !name.strip_suffix(unit).is_some_and(|s| s.ends_with('_')) {
                    line.pos = unit_at;
                    return Err(line.err(E::UnitNotSuffix {
                        family: name.to_owned(),
                        unit: unit.to_owned(),
                    }));
                }
                Meta::Unit((!unit.is_empty()).then(|| unit.to_owned()))
            }
        };
        self.metadata(line, name_at, name, meta)?;
        Ok(false)
    }

    fn metadata(
        &mut self,
        line: &mut Line<'a>,
        name_at: usize,
        name: &'a str,
        meta: Meta,
    ) -> Result<(), ParseError> {
        let what = meta.what();
        line.pos = name_at;
        let is_current = self
            .current
            .as_ref()
            .is_some_and(|c| self.families[c.index].name == name);
        if !is_current {
            if let Some(&index) = self
                .family_by_name
                .get(name)
                .or_else(|| self.family_by_sample.get(name))
            {
                return Err(line.err(E::Interleaved {
                    name: name.to_owned(),
                    family: self.families[index].name.clone(),
                    ended_at: self.ended_at[index],
                }));
            }
            self.start_family(line, name)?;
        }
        let Some(current) = self.current.as_mut() else {
            unreachable!("a current family was checked or just started above");
        };
        if current.has_samples {
            return Err(line.err(E::MetadataAfterSamples {
                what,
                family: name.to_owned(),
            }));
        }
        let seen = match meta {
            Meta::Help(_) => &mut current.has_help,
            Meta::Type(_) => &mut current.has_type,
            Meta::Unit(_) => &mut current.has_unit,
        };
        if std::mem::replace(seen, true) {
            return Err(line.err(E::DuplicateMetadata {
                what,
                family: name.to_owned(),
            }));
        }
        let index = current.index;
        let family = &mut self.families[index];
        let no_unit = |kind: Kind| matches!(kind, Kind::Info | Kind::StateSet);
        match (&meta, family.kind, &family.unit) {
            (&Meta::Type(kind), _, Some(_)) | (Meta::Unit(Some(_)), kind, _) if no_unit(kind) => {
                return Err(line.err(E::UnitNotAllowed {
                    kind: kind.as_str(),
                    family: name.to_owned(),
                }));
            }
            _ => {}
        }
        match meta {
            Meta::Help(help) => family.help = Some(help),
            Meta::Type(kind) => {
                family.kind = kind;
                if self.format == Format::OpenMetrics {
                    self.claim_sample_names(line, index)?;
                }
            }
            Meta::Unit(unit) => family.unit = unit,
        }
        self.ended_at[index] = line.no;
        Ok(())
    }

    /// OpenMetrics: a typed family owns its suffixed sample names; one that
    /// is already a family's name, or another family's sample name, clashes.
    fn claim_sample_names(&mut self, line: &Line<'a>, index: usize) -> Result<(), ParseError> {
        let family = &self.families[index];
        for suffix in family.kind.sample_suffixes(self.format) {
            if suffix.is_empty() {
                continue;
            }
            let name = format!("{}{suffix}", family.name);
            let other = self
                .family_by_name
                .get(name.as_str())
                .or_else(|| self.claimed.get(&name));
            if other.is_some_and(|&other| other != index) {
                return Err(line.err(E::ClashingName {
                    name,
                    kind: family.kind.as_str(),
                    family: family.name.clone(),
                }));
            }
            self.claimed.insert(name, index);
        }
        Ok(())
    }

    /// Finishes the current family and starts family `name`, which the
    /// caller checked is new; `line.pos` is at the name.
    fn start_family(&mut self, line: &Line<'a>, name: &'a str) -> Result<usize, ParseError> {
        if let Some(&owner) = self.claimed.get(name) {
            let owner = &self.families[owner];
            return Err(line.err(E::ClashingName {
                name: name.to_owned(),
                kind: owner.kind.as_str(),
                family: owner.name.clone(),
            }));
        }
        self.finish_family()?;
        let line_no = line.no;
        let index = self.families.len();
        self.families.push(Family {
            name: name.to_owned(),
            kind: Kind::Untyped,
            help: None,
            unit: None,
            samples: Vec::new(),
        });
        self.ended_at.push(line_no);
        self.family_by_name.insert(name, index);
        self.current = Some(Current {
            index,
            has_type: false,
            has_help: false,
            has_unit: false,
            has_samples: false,
        });
        Ok(index)
    }

    /// The checks a family can only make once it is complete (its last
    /// histogram point, and in the text format every point it left).
    fn finish_family(&mut self) -> Result<(), ParseError> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        let index = current.index;
        self.family_state
            .finish(self.format, &self.families[index])
            .map_err(|(at, kind)| ParseError {
                line: match at {
                    At::Line(line) => line,
                    At::Here(_) => self.ended_at[index],
                },
                column: 1,
                kind,
            })
    }

    fn sample(&mut self, line: &mut Line<'a>) -> Result<(), ParseError> {
        let name_at = line.pos;
        let name = line.metric_name()?;
        let mut labels = Vec::new();
        self.value_offsets.clear();
        let before_blanks = line.pos;
        if !self.om() {
            line.skip_blanks();
        }
        if line.peek() == Some(b'{') {
            self.labels(line, &mut labels)?;
            // Text format: `}` and the value cannot merge, so no blank is needed.
            if !self.om() {
                line.skip_blanks();
            } else {
                line.expect_byte(b' ', "a space and a value")?;
            }
        } else {
            line.pos = before_blanks;
            self.separator(line)?;
        }
        let value_at = line.pos;
        let value = self.number(line)?;
        let mut timestamp_ms = None;
        // OpenMetrics: seconds as written; text format: milliseconds.
        let mut timestamp = None;
        let mut timestamp_at = line.pos;
        let mut exemplar = None;
        let mut exemplar_at = 0;
        if self.om() {
            if line.peek() == Some(b' ') && line.peek_at(1) != Some(b'#') {
                line.pos += 1;
                timestamp_at = line.pos;
                let (ms, seconds) = self.om_timestamp(line)?;
                timestamp_ms = Some(ms);
                timestamp = Some(seconds);
            }
            if line.peek() == Some(b' ') {
                line.pos += 1;
                exemplar_at = line.pos;
                exemplar = Some(Box::new(self.exemplar(line)?));
            }
        } else {
            line.skip_blanks();
            if line.peek().is_some() {
                let at = line.pos;
                timestamp_at = at;
                let token = line.token();
                let ms = token
                    .parse::<i64>()
                    .ok()
                    .filter(|_| is_integer(token))
                    .ok_or_else(|| {
                        line.pos = at;
                        line.err(E::BadTimestamp(token.to_owned()))
                    })?;
                timestamp_ms = Some(ms);
                timestamp = Some(ms as f64);
                line.skip_blanks();
            }
        }
        line.expect_end()?;

        let index = self.family_for(line, name_at, name)?;
        let family = &self.families[index];
        let suffix = &name[family.name.len()..];
        let incoming = Incoming {
            name,
            name_at,
            suffix,
            labels: &labels,
            label_at: &self.value_offsets,
            value,
            value_at,
            timestamp,
            timestamp_at,
            line: line.no,
        };
        let le = check_sample(self.format, family, &incoming).map_err(|b| located(line, b))?;
        if exemplar.is_some()
            && !matches!(
                (family.kind, suffix),
                (Kind::Counter, "_total") | (Kind::Histogram | Kind::GaugeHistogram, "_bucket")
            )
        {
            line.pos = exemplar_at;
            return Err(line.err(E::MisplacedExemplar));
        }

        // A series is its name and label set; a metric is its label set less
        // the type's special label (a bucket's `le`). Per-label hashes are
        // added, so label order does not matter and the special label's can
        // be taken back out.
        let special = Special::of(family.kind, suffix);
        let special_label = special.label(&family.name);
        let mut labels_sum = 0u64;
        let mut special_hash = 0u64;
        for label in &labels {
            let h = self.series_hasher.hash_one(label);
            labels_sum = labels_sum.wrapping_add(h);
            if Some(label.0.as_str()) == special_label {
                special_hash = h;
            }
        }
        if FamilyState::tracks(self.format, family.kind) {
            let key = match special {
                Special::All => 0,
                _ => labels_sum.wrapping_sub(special_hash),
            };
            self.family_state
                .enter(self.format, family, &incoming, key, special)
                .map_err(|b| located(line, b))?;
        }
        let series = self.series_hasher.hash_one((name, labels_sum));
        let sample_index = family.samples.len();
        match self.series_last.entry(series) {
            Entry::Occupied(mut seen) => {
                let (f, i) = *seen.get();
                let earlier = &self.families[f].samples[i];
                if earlier.name == name && same_label_set(&earlier.labels, &labels) {
                    // OpenMetrics: the metric's samples were checked to all
                    // have a timestamp (or none) that never goes back. Two
                    // at the same millisecond: the earliest counts.
                    match (self.format, earlier.timestamp_ms, timestamp_ms) {
                        (Format::OpenMetrics, Some(a), Some(b)) if a == b => {
                            self.ended_at[index] = line.no;
                            return Ok(());
                        }
                        (Format::OpenMetrics, Some(_), Some(_)) => {
                            seen.insert((index, sample_index));
                        }
                        _ => {
                            line.pos = name_at;
                            return Err(line.err(E::DuplicateSeries(name.to_owned())));
                        }
                    }
                } else {
                    // Two series with one hash: the later one is tracked.
                    seen.insert((index, sample_index));
                }
            }
            Entry::Vacant(new) => {
                new.insert((index, sample_index));
            }
        }
        if matches!(family.kind, Kind::Histogram | Kind::GaugeHistogram) {
            self.family_state
                .record(self.format, family, &incoming, le)
                .map_err(|b| located(line, b))?;
        }
        self.families[index].samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
            timestamp_ms,
            exemplar,
        });
        self.ended_at[index] = line.no;
        Ok(())
    }

    /// The family a sample named `name` belongs to: the current one if the
    /// name fits its type, otherwise a new untyped family.
    fn family_for(
        &mut self,
        line: &mut Line<'a>,
        name_at: usize,
        name: &'a str,
    ) -> Result<usize, ParseError> {
        if let Some(current) = &mut self.current {
            let family = &self.families[current.index];
            let suffixes = family.kind.sample_suffixes(self.format);
            if let Some(suffix) = name.strip_prefix(family.name.as_str()) {
                if suffixes.contains(&suffix) {
                    current.has_samples = true;
                    let index = current.index;
                    if name != self.last_sample_name {
                        self.family_by_sample.entry(name).or_insert(index);
                        self.last_sample_name = name;
                    }
                    return Ok(index);
                }
                if suffix.is_empty() {
                    line.pos = name_at;
                    return Err(line.err(E::NotASampleOfFamily {
                        name: name.to_owned(),
                        family: family.name.clone(),
                        kind: family.kind.as_str(),
                        allowed: suffixes
                            .iter()
                            .map(|s| format!("`{}{s}`", family.name))
                            .collect::<Vec<_>>()
                            .join(", "),
                    }));
                }
            }
        }
        if let Some(&index) = self
            .family_by_sample
            .get(name)
            .or_else(|| self.family_by_name.get(name))
        {
            line.pos = name_at;
            return Err(line.err(E::Interleaved {
                name: name.to_owned(),
                family: self.families[index].name.clone(),
                ended_at: self.ended_at[index],
            }));
        }
        line.pos = name_at;
        let index = self.start_family(line, name)?;
        if let Some(current) = &mut self.current {
            current.has_samples = true;
        }
        self.family_by_sample.insert(name, index);
        self.last_sample_name = name;
        Ok(index)
    }

    /// `{name="value",...}`; blanks around tokens only in the text format,
    /// which also allows a trailing comma.
    fn labels(
        &mut self,
        line: &mut Line<'a>,
        out: &mut Vec<(String, String)>,
    ) -> Result<(), ParseError> {
        let om = self.om();
        line.pos += 1; // `{`
        loop {
            if !om {
                line.skip_blanks();
            }
            if (out.is_empty() || !om) && line.peek() == Some(b'}') {
                line.pos += 1;
                return Ok(());
            }
            let name_at = line.pos;
            let name = line.label_name()?;
            if out.iter().any(|(k, _)| k == name) {
                line.pos = name_at;
                return Err(line.err(E::DuplicateLabel(name.to_owned())));
            }
            if out.len() == self.limits.max_labels_per_sample {
                line.pos = name_at;
                return Err(line.err(E::TooManyLabels {
                    limit: self.limits.max_labels_per_sample,
                }));
            }
            if !om {
                line.skip_blanks();
            }
            line.expect_byte(b'=', "`=` after the label name")?;
            if !om {
                line.skip_blanks();
            }
            self.value_offsets.push(line.pos);
            let value = line.quoted(if om { &OM_ESCAPES } else { &TEXT_LABEL_ESCAPES })?;
            out.push((name.to_owned(), value));
            if !om {
                line.skip_blanks();
            }
            match line.peek() {
                Some(b',') => line.pos += 1,
                Some(b'}') => {
                    line.pos += 1;
                    return Ok(());
                }
                _ => return Err(line.expected("`,` or `}` after a label value")),
            }
        }
    }

    fn separator(&self, line: &mut Line<'a>) -> Result<(), ParseError> {
        if self.om() {
            line.expect_byte(b' ', "a space and a value")
        } else {
            line.expect_blanks("a blank and a value")
        }
    }

    fn number(&self, line: &mut Line<'a>) -> Result<f64, ParseError> {
        let at = line.pos;
        let token = if self.om() {
            line.take_while(|b| b != b' ')
        } else {
            line.token()
        };
        if token.is_empty() {
            line.pos = at;
            return Err(line.expected("a value"));
        }
        parse_number(token).ok_or_else(|| {
            line.pos = at;
            line.err(E::BadNumber(token.to_owned()))
        })
    }

    /// OpenMetrics timestamps are seconds, any real number (fraction,
    /// exponent); kept as rounded milliseconds, and as written for the
    /// ordering checks. One beyond `i64` milliseconds (some 292 million
    /// years) is valid and kept at the end of that range.
    fn om_timestamp(&self, line: &mut Line<'a>) -> Result<(i64, f64), ParseError> {
        let at = line.pos;
        let token = line.take_while(|b| b != b' ');
        match parse_number(token).filter(|s| s.is_finite()) {
            // `as` saturates, which is the documented clamp.
            Some(seconds) => Ok(((seconds * 1000.0).round() as i64, seconds)),
            None => {
                line.pos = at;
                Err(line.err(E::BadTimestamp(token.to_owned())))
            }
        }
    }

    /// `# {labels} value [timestamp]`, after the sample's separating space.
    fn exemplar(&mut self, line: &mut Line<'a>) -> Result<Exemplar, ParseError> {
        line.expect_byte(b'#', "`#` starting an exemplar, or end of line")?;
        line.expect_byte(b' ', "a space and exemplar labels")?;
        if line.peek() != Some(b'{') {
            return Err(line.expected("`{` starting exemplar labels"));
        }
        let labels_at = line.pos;
        let mut labels = Vec::new();
        self.labels(line, &mut labels)?;
        let chars: usize = labels
            .iter()
            .map(|(k, v)| k.chars().count() + v.chars().count())
            .sum();
        if chars > 128 {
            line.pos = labels_at;
            return Err(line.err(E::ExemplarTooLong(chars)));
        }
        line.expect_byte(b' ', "a space and the exemplar value")?;
        let value = self.number(line)?;
        let mut timestamp_ms = None;
        if line.peek() == Some(b' ') {
            line.pos += 1;
            timestamp_ms = Some(self.om_timestamp(line)?.0);
        }
        Ok(Exemplar {
            labels,
            value,
            timestamp_ms,
        })
    }
}

/// Label names are unique within a sample, so equal length and every pair of
/// one found in the other means the same set.
fn same_label_set(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().all(|pair| b.contains(pair))
}

/// A broken type rule as a located error.
fn located(line: &mut Line<'_>, (at, kind): Broken) -> ParseError {
    match at {
        At::Here(pos) => {
            line.pos = pos;
            line.err(kind)
        }
        At::Line(no) => ParseError {
            line: no,
            column: 1,
            kind,
        },
    }
}

enum Meta {
    Help(String),
    Type(Kind),
    Unit(Option<String>),
}

impl Meta {
    fn what(&self) -> &'static str {
        match self {
            Meta::Help(_) => "HELP",
            Meta::Type(_) => "TYPE",
            Meta::Unit(_) => "UNIT",
        }
    }
}

/// Escapes, what they stand for, and what an unknown one does.
struct Escapes {
    known: &'static [(u8, char)],
    /// OpenMetrics keeps an unknown escape (`\f`) as written, backslash and
    /// all, as Prometheus' own parser does; the text format refuses it.
    keep_unknown: bool,
    /// For the error message.
    list: &'static str,
}

const TEXT_LABEL_ESCAPES: Escapes = Escapes {
    known: &[(b'\\', '\\'), (b'"', '"'), (b'n', '\n')],
    keep_unknown: false,
    list: "`\\\\`, `\\\"`, `\\n`",
};
const TEXT_HELP_ESCAPES: Escapes = Escapes {
    known: &[(b'\\', '\\'), (b'n', '\n')],
    keep_unknown: false,
    list: "`\\\\`, `\\n`",
};
/// Label values and help text alike.
const OM_ESCAPES: Escapes = Escapes {
    known: &[(b'\\', '\\'), (b'"', '"'), (b'n', '\n')],
    keep_unknown: true,
    list: "`\\\\`, `\\\"`, `\\n`",
};

/// Unescapes `raw`, a slice of `line` (for error positions).
fn unescape(line: &mut Line<'_>, raw: &str, escapes: &Escapes) -> Result<String, ParseError> {
    let base = raw.as_ptr() as usize - line.text.as_ptr() as usize;
    let bytes = raw.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'\\') else {
        return Ok(raw.to_owned());
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut i = first;
    let mut segment = first;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            out.push_str(&raw[segment..i]);
            match bytes
                .get(i + 1)
                .and_then(|b| escapes.known.iter().find(|(e, _)| e == b))
            {
                Some(&(_, c)) => {
                    out.push(c);
                    i += 2;
                }
                None if escapes.keep_unknown => {
                    // The backslash stays; what follows is read as usual.
                    out.push('\\');
                    i += 1;
                }
                None => {
                    line.pos = base + i;
                    let c = raw[i + 1..].chars().next().unwrap_or(' ');
                    return Err(line.err(E::BadEscape(c, escapes.list)));
                }
            }
            segment = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&raw[segment..]);
    Ok(out)
}

fn is_integer(token: &str) -> bool {
    let digits = token.strip_prefix(['+', '-']).unwrap_or(token);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[a-zA-Z0-9_:]`: bit 0 metric-name byte, bit 1 label-name byte.
const NAME_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            table[b] = 0b11;
        } else if c == b':' {
            table[b] = 0b01;
        }
        b += 1;
    }
    table
};

fn is_metric_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)] & 0b01 != 0
}

fn is_label_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)] & 0b10 != 0
}

/// A cursor over one line (without its line feed).
struct Line<'a> {
    text: &'a str,
    no: usize,
    pos: usize,
}

impl<'a> Line<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.text.as_bytes().get(self.pos + ahead).copied()
    }

    fn err(&self, kind: E) -> ParseError {
        let before = self.text.get(..self.pos).unwrap_or(self.text);
        ParseError {
            line: self.no,
            column: before.chars().count() + 1,
            kind,
        }
    }

    fn found(&self) -> String {
        match self.text.get(self.pos..).and_then(|s| s.chars().next()) {
            None => "end of line".to_owned(),
            Some(c) => {
                if c.is_control() {
                    format!("`{}`", c.escape_debug())
                } else {
                    format!("`{c}`")
                }
            }
        }
    }

    fn expected(&self, expected: &'static str) -> ParseError {
        self.err(E::Expected {
            expected,
            found: self.found(),
        })
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn expect_blanks(&mut self, expected: &'static str) -> Result<(), ParseError> {
        if !matches!(self.peek(), Some(b' ' | b'\t')) {
            return Err(self.expected(expected));
        }
        self.skip_blanks();
        Ok(())
    }

    fn expect_byte(&mut self, byte: u8, expected: &'static str) -> Result<(), ParseError> {
        if self.peek() != Some(byte) {
            return Err(self.expected(expected));
        }
        self.pos += 1;
        Ok(())
    }

    fn expect_end(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.expected("end of line")),
        }
    }

    /// After a token: a blank or the end of the line.
    fn end_of_token(&self, expected: &'static str) -> Result<(), ParseError> {
        match self.peek() {
            None | Some(b' ' | b'\t') => Ok(()),
            Some(_) => Err(self.expected(expected)),
        }
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let rest = self.text.as_bytes().get(start..).unwrap_or_default();
        self.pos += rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len());
        // Stops only before an ASCII byte or at the end: a char boundary.
        &self.text[start..self.pos]
    }

    /// Text format token: up to the next blank.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        let len = self.text[start..]
            .find([' ', '\t'])
            .unwrap_or(self.text.len() - start);
        self.pos += len;
        &self.text[start..self.pos]
    }

    fn metric_name(&mut self) -> Result<&'a str, ParseError> {
        match self.peek() {
            Some(b) if is_metric_name_byte(b) && !b.is_ascii_digit() => {
                Ok(self.take_while(is_metric_name_byte))
            }
            _ => Err(self.expected("a metric name")),
        }
    }

    fn label_name(&mut self) -> Result<&'a str, ParseError> {
        match self.peek() {
            Some(b) if is_label_name_byte(b) && !b.is_ascii_digit() => {
                Ok(self.take_while(is_label_name_byte))
            }
            _ => Err(self.expected("a label name")),
        }
    }

    /// `"..."` with escapes; the cursor ends after the closing quote.
    fn quoted(&mut self, escapes: &Escapes) -> Result<String, ParseError> {
        let open = self.pos;
        self.expect_byte(b'"', "`\"` opening the label value")?;
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        if i >= bytes.len() {
            self.pos = open;
            return Err(self.err(E::UnterminatedLabelValue));
        }
        let raw = &self.text[self.pos..i];
        let value = unescape(self, raw, escapes)?;
        self.pos = i + 1;
        Ok(value)
    }
}
