//! The policy parser never panics: random bytes, random YAML-ish text, and
//! random mutations of every real policy in `rollout-policies/` either compile
//! or come back as located diagnostics. Case counts are fixed so the run is
//! deterministic in size (proptest's seed is persisted on failure).

use std::path::Path;

use canaryd::policy::parse_policy;
use proptest::prelude::*;

fn real_policies() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollout-policies");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("rollout-policies/ exists")
        .map(|e| std::fs::read(e.expect("readable entry").path()).expect("readable policy"))
        .collect();
    out.sort();
    out
}

/// Parse and check the contract of the result: a policy, or at least one
/// diagnostic, each with a real position and a message.
fn parse_never_panics(bytes: &[u8]) {
    match parse_policy("fuzz.yaml", bytes) {
        Ok(p) => {
            assert!(!p.steps.is_empty());
            // Whatever compiles can be run: the engine's monitor accepts it.
            if let Err(e) = canaryd::monitor::Monitor::new(&p) {
                panic!("policy compiled but the monitor refused it: {e}");
            }
        }
        Err(diags) => {
            assert!(!diags.0.is_empty());
            for d in &diags.0 {
                assert!(d.pos.line >= 1 && d.pos.col >= 1, "unlocated: {d}");
                assert!(!d.message.is_empty());
            }
        }
    }
}

/// Fragments that stress the YAML layer and the decoder alike.
const TOKENS: &[&str] = &[
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!tag ",
    "? ",
    "|\n",
    ">\n",
    "'",
    "\"",
    "#",
    "\n",
    "  ",
    "\t",
    "~",
    "null",
    "yes",
    "on",
    "true",
    "1e400",
    ".nan",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "%",
    "100%",
    "-1",
    "0",
    "1h",
    "0s",
    "999999999999999999999999d",
    "200ms",
    "<<: *a",
    "\u{feff}",
    "é",
    "\\u0000",
    "---\n",
    "...\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: usize },
    ReplaceLine { line: usize, token: usize },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Truncate { at: usize },
    FlipByte { at: usize, bit: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(line, token)| Mutation::ReplaceLine { line, token }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipByte { at, bit }),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    let n = bytes.len();
    match *m {
        Mutation::Delete { at, len } => {
            let at = at % n;
            bytes.drain(at..(at + len).min(n));
        }
        Mutation::Insert { at, token } => {
            let at = at % (n + 1);
            let t = TOKENS[token % TOKENS.len()].as_bytes();
            bytes.splice(at..at, t.iter().copied());
        }
        Mutation::FlipByte { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::ReplaceLine { line, token } => {
            let mut lines: Vec<Vec<u8>> =
                bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let i = line % lines.len();
            let indent = lines[i].iter().take_while(|&&b| b == b' ').count();
            let mut new = vec![b' '; indent];
            new.extend_from_slice(TOKENS[token % TOKENS.len()].as_bytes());
            lines[i] = new;
            bytes = lines.join(&b'\n');
        }
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<Vec<u8>> =
                bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let i = line % lines.len();
            let copy = lines[i].clone();
            lines.insert(i, copy);
            bytes = lines.join(&b'\n');
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<Vec<u8>> =
                bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let (a, b) = (a % lines.len(), b % lines.len());
            lines.swap(a, b);
            bytes = lines.join(&b'\n');
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_never_panics(&bytes);
    }

    #[test]
    fn random_token_soup(tokens in proptest::collection::vec(0usize..TOKENS.len(), 0..80)) {
        let text: String = tokens.iter().map(|&i| TOKENS[i]).collect();
        parse_never_panics(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_policies(which in any::<usize>(), mutations in proptest::collection::vec(mutation(), 1..6)) {
        let policies = real_policies();
        let mut bytes = policies[which % policies.len()].clone();
        for m in &mutations {
            bytes = apply(bytes, m);
        }
        parse_never_panics(&bytes);
    }
}
