//! An error told with its causes, for status fields and logs that people
//! read. Outbound HTTP errors need it most: reqwest's own message is
//! "error sending request", and the reason (a refused certificate, a
//! connection reset) is only in the causes.

/// `e` and its causes, `: `-separated, each said once (a cause whose text
/// is already in the message is skipped).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("invalid peer certificate: UnknownIssuer")]
    struct Inner;

    #[test]
    fn causes_follow_the_message_once_each() {
        assert_eq!(
            with_causes(&Outer(Inner)),
            "error sending request: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            with_causes(&Inner),
            "invalid peer certificate: UnknownIssuer"
        );
    }
}
