//! How both formats spell a number (a sample value, a timestamp, an `le` or
//! `quantile` label value): one function, shared by the grammar, the type
//! rules and the queries.

/// A float as both formats spell it: decimal with optional exponent, or
/// `[+-]Inf`/`Infinity`/`NaN` in any case. (Go's `ParseFloat`, which the text
/// format's reference parser uses, also takes hex floats; no client writes them.)
pub(super) fn parse_number(token: &str) -> Option<f64> {
    let b = token.as_bytes();
    let unsigned = match b.first() {
        Some(b'+' | b'-') => &token[1..],
        _ => token,
    };
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return Some(if b[0] == b'-' {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if token.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let u = unsigned.as_bytes();
    let mut i = 0;
    let int_digits = u.iter().take_while(|b| b.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if u.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = u[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if matches!(u.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(u.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = u[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if exp_digits == 0 {
            return None;
        }
        i += exp_digits;
    }
    if i != u.len() {
        return None;
    }
    token.parse().ok()
}
