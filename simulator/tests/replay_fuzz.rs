//! Replay files and Prometheus responses never panic the simulator, whatever
//! their numbers.

use canaryd_sim::source::{parse_replay, replay_from_prometheus};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_replay("r.json", &bytes);
        let _ = replay_from_prometheus(&[("p.json".into(), bytes)]);
    }

    #[test]
    fn extreme_numbers_never_panic(
        t0 in prop_oneof![Just(-1e300f64), Just(0.0), Just(1e300), -1e12f64..1e12],
        t1 in prop_oneof![Just(-1e300f64), Just(1e300), -1e12f64..1e12],
        v in prop_oneof![Just("1e400".to_owned()), Just("NaN".to_owned()), Just("-5".to_owned()), Just("18446744073709551615".to_owned())],
        arm in prop_oneof![Just("canary"), Just("baseline"), Just("other")],
    ) {
        let body = format!(
            "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{{\"metric\":{{\"arm\":\"{arm}\",\"signal\":\"requests\"}},\"values\":[[{t0},\"{v}\"],[{t1},\"{v}\"]]}},{{\"metric\":{{\"arm\":\"canary\",\"signal\":\"requests\"}},\"values\":[[{t0},\"{v}\"],[{t1},\"{v}\"]]}}]}}}}"
        );
        if let Ok(replay) = replay_from_prometheus(&[("p.json".into(), body.into_bytes())]) {
            let text = serde_json::to_vec(&replay).unwrap();
            let _ = parse_replay("r.json", &text);
        }
    }
}
