//! The simulator reaches the policy compiler through the core alone.

#[test]
fn compiles_a_real_policy_without_the_daemon() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rollout-policies/recommender.yaml"
    );
    let bytes = std::fs::read(path).unwrap();
    let policy = canaryd_sim::policy::parse_policy(path, &bytes).unwrap();
    assert_eq!(policy.name, "recommender-ctr");
}
